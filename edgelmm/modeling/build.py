"""Building LLaVA-style models from presets or from local pretrained parts.

`build_model("demo")` builds a preset with random weights; `build_model(vision=DIR, llm=DIR)` joins a
local CLIP/SigLIP checkpoint and a local causal LM (Hugging Face folders) with a fresh projector and
gives the LM's tokenizer an `<image>` token. Either way the result is a `ModelParts`: the model, its
tokenizer and the image preprocessing it expects.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

from edgelmm.errors import ConfigError
from edgelmm.imaging import ImageSpec
from edgelmm.modeling.lm import LANGUAGE_ARCHS, language_arch_of
from edgelmm.modeling.projectors import DEFAULT_PROJECTOR
from edgelmm.modeling.vision_towers import VISION_ARCHS, vision_arch_of
from edgelmm.presets import PRESETS, get_preset
from edgelmm.tokenizer import add_image_token, image_token_id, tokenizer_from_json, train_tokenizer


@dataclass
class ModelParts:
    """A model with what it needs to read inputs: its tokenizer and its image preprocessing."""

    model: object  # EdgeLlavaForConditionalGeneration
    tokenizer: object  # a transformers tokenizer with `<image>` and a chat template
    image_spec: ImageSpec

    @property
    def num_image_tokens(self) -> int:
        return self.model.config.image_seq_length


def _resolve(ref: str, part: str) -> tuple[str, object]:
    """("preset", Preset) for a preset name, ("path", Path) for a local folder; never by substring."""
    if ref in PRESETS:
        return "preset", get_preset(ref)
    if Path(ref).is_dir():
        return "path", Path(ref)
    raise ConfigError(f"{part} {ref!r} is neither a preset ({', '.join(PRESETS)}) nor a local checkpoint folder")


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' load reports (e.g. a full CLIP checkpoint's unused text-tower weights)."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _load_config(path: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot read the config in {path}: {e}") from None


def _vision_part(ref: str):
    """(vision config, loaded tower or None, image spec)."""
    kind, value = _resolve(ref, "vision")
    if kind == "preset":
        arch = VISION_ARCHS.get(value.vision_arch)
        config = arch.make_config(**value.vision)
        return config, None, arch.image_spec(config.image_size)
    import torch

    config = _load_config(value)
    config = getattr(config, "vision_config", None) or config  # a full CLIP/SigLIP model holds a vision config
    arch = vision_arch_of(config.model_type)
    with _quiet_transformers():
        tower = arch.model_cls().from_pretrained(value, config=config, dtype=torch.float32)
    processor_file = value / "preprocessor_config.json"
    if processor_file.exists():
        import json

        spec = ImageSpec.from_hf(json.loads(processor_file.read_text()))
    else:
        spec = arch.image_spec(config.image_size)
    return config, tower, spec


@functools.lru_cache(maxsize=4)
def _default_tokenizer_json(vocab_size: int) -> str:
    from edgelmm.data.edgescenes import text_corpus

    return train_tokenizer(text_corpus(n_scenes=300, seed=12345), vocab_size).backend_tokenizer.to_str()


def default_tokenizer(vocab_size: int):
    """A BPE tokenizer trained on EdgeScenes text, for models built from a preset without one."""
    return tokenizer_from_json(_default_tokenizer_json(vocab_size))


def _preset_text_config(preset, tokenizer=None):
    """The preset's LM config; a from-scratch LM takes its special tokens from its tokenizer."""
    ids = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    if tokenizer is not None:
        ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    return LANGUAGE_ARCHS.get(preset.lm_arch).make_config(**preset.lm, **ids)


def _lm_part(ref: str, tokenizer):
    """(text config, loaded causal LM or None, tokenizer with `<image>`)."""
    kind, value = _resolve(ref, "llm")
    if kind == "preset":
        vocab_size = value.lm["vocab_size"]
        tokenizer = tokenizer or default_tokenizer(min(vocab_size, 4096))
        if len(tokenizer) > vocab_size:
            raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but preset {value.name!r} "
                              f"has a vocabulary of {vocab_size}")
        return _preset_text_config(value, tokenizer), None, tokenizer
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = _load_config(value)
    language_arch_of(config.model_type)
    with _quiet_transformers():
        lm = AutoModelForCausalLM.from_pretrained(value, dtype=torch.float32)
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(value)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load the tokenizer of {value}: {e}") from None
    return config, lm, add_image_token(tokenizer)


def build_model(preset: str | None = None, *, vision: str | None = None, llm: str | None = None,
                projector: str | None = None, projector_args: dict | None = None,
                tokenizer=None, lm_weights: bool = True) -> ModelParts:
    """Build a LLaVA-style model from a preset and/or local parts (see the module docstring).

    `vision` and `llm` each take a preset name (that preset's part, random weights) or a folder
    (pretrained weights); they default to `preset`'s. The projector is always new.
    `lm_weights=False` leaves a preset's language model on the meta device (shapes, no memory): for
    exporting a real-scale model whose weights are made per tensor while writing
    (`export_gguf(..., materialize=...)`; benchmarks/export_real_scale.py).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from edgelmm.modeling.config import make_llava_config, record_trained
    from edgelmm.modeling.llava import EdgeLlavaForConditionalGeneration
    from edgelmm.modeling.projectors import build_projector

    base = get_preset(preset) if preset is not None else None
    vision, llm = vision or preset, llm or preset
    if vision is None or llm is None:
        raise ConfigError("build_model needs a preset, or both vision= and llm=")
    if projector is None:
        projector = base.projector if base else DEFAULT_PROJECTOR
        projector_args = projector_args if projector_args is not None else (base.projector_args if base else {})

    vision_config, tower, image_spec = _vision_part(vision)
    text_config, lm, tokenizer = _lm_part(llm, tokenizer)
    if lm is not None and not lm_weights:
        raise ConfigError("lm_weights=False applies to a preset's language model, not a pretrained one")
    pretrained = [part for part, loaded in (("vision", tower), ("lm", lm)) if loaded is not None]
    same_preset = base is not None and vision == llm == preset
    config = make_llava_config(vision_config, text_config, image_token_id=image_token_id(tokenizer),
                               projector=projector, projector_args=projector_args,
                               feature_layer=base.feature_layer if base else -2,
                               preset=preset if same_preset else None)

    # The shell is built without memory; every part is then a real module, loaded or freshly initialized.
    with torch.device("meta"):
        model = EdgeLlavaForConditionalGeneration(config)
    model.model.vision_tower = tower or vision_arch_of(vision_config.model_type).model_cls()(config.vision_config)
    if lm_weights:  # otherwise the shell's language model and head stay as they are, on the meta device
        lm = lm or AutoModelForCausalLM.from_config(config.text_config)
        model.model.language_model, model.lm_head = lm.model, lm.lm_head
    model.model.multi_modal_projector = build_projector(config)
    if len(tokenizer) > config.text_config.vocab_size:  # a pretrained LM whose vocab lacked `<image>`
        with _quiet_transformers():
            model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    model.float()
    lm_prefixes = () if lm_weights else ("model.language_model.", "lm_head.")
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()]
            if t.is_meta and not n.startswith(lm_prefixes)]
    assert not meta, f"parts left uninitialized: {meta[:3]}"
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # What is already trained, for the training stages' prerequisites (edgelmm.train.stages).
    record_trained(config, pretrained)
    return ModelParts(model, tokenizer, image_spec)


def preset_summary(name: str) -> dict:
    """A preset's parts, image-token count and parameter count per part, without allocating weights."""
    import torch

    from edgelmm.modeling.config import make_llava_config
    from edgelmm.modeling.llava import EdgeLlavaForConditionalGeneration

    preset = get_preset(name)
    vision_config, _, _ = _vision_part(name)
    text_config = _preset_text_config(preset)
    config = make_llava_config(vision_config, text_config, image_token_id=text_config.vocab_size - 1,
                               projector=preset.projector, projector_args=preset.projector_args,
                               feature_layer=preset.feature_layer, preset=name)
    with torch.device("meta"):
        model = EdgeLlavaForConditionalGeneration(config)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731 (shared weights once)
    vision, projector, total = count(model.vision_tower), count(model.projector), count(model)
    return {"name": name, "summary": preset.summary, "vision": preset.vision_arch,
            "image_size": vision_config.image_size, "projector": preset.projector, "lm": preset.lm_arch,
            "image_tokens": config.image_seq_length,
            "params": {"vision": vision, "projector": projector, "lm": total - vision - projector, "total": total}}
