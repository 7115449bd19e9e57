"""Checkpoints: a Hugging Face folder (config.json, model.safetensors, tokenizer, preprocessor_config.json).

The folder is written atomically. `mlp2x_gelu` checkpoints are plain LLaVA checkpoints that
transformers' `LlavaForConditionalGeneration` loads without edgelmm.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgelmm.errors import CheckpointError, UserError, first_line
from edgelmm.fsutil import atomic_output_dir
from edgelmm.imaging import ImageSpec
from edgelmm.modeling.build import ModelParts

PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")  # fast, SentencePiece, byte-level BPE


def save_checkpoint(parts: ModelParts, path: str | Path, *, force: bool = False) -> Path:
    with atomic_output_dir(path, force) as tmp:
        parts.model.save_pretrained(tmp)
        parts.tokenizer.save_pretrained(tmp)
        processor = {**parts.image_spec.to_hf(), "edgelmm_image_spec": parts.image_spec.to_dict()}
        (tmp / PREPROCESSOR_FILE).write_text(json.dumps(processor, indent=2))
    return Path(path)


def load_checkpoint(path: str | Path, *, dtype=None) -> ModelParts:
    """Load an edgelmm checkpoint or a plain transformers LLaVA folder.

    `dtype`: the torch dtype of the loaded weights (default float32, whatever the files hold); the
    torch backend asks for bfloat16 to run a large model in half the memory.
    """
    import torch
    from transformers import AutoTokenizer

    from edgelmm.modeling.config import edgelmm_fields
    from edgelmm.modeling.llava import EdgeLlavaForConditionalGeneration
    from edgelmm.tokenizer import add_image_token

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} is not a checkpoint: no config.json")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_file} is not valid JSON: {e}") from None
    if model_type != "llava":
        raise CheckpointError(f"{path} holds a {model_type!r} model, not a LLaVA model")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise CheckpointError(f"{path} has no weights (model.safetensors)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(f"{path} has no tokenizer ({' or '.join(TOKENIZER_FILES)}): copy the model's "
                              "tokenizer files into the folder")
    try:
        # llava-hf's layout keeps the head under language_model.; transformers renames that key only for
        # its own class (the other keys are renamed inside its LlavaModel), so it is named here.
        # Registering the renaming for the subclass instead would make saves (and Trainer resumes) use
        # the old layout too.
        model = EdgeLlavaForConditionalGeneration.from_pretrained(
            path, dtype=dtype or torch.float32, key_mapping={r"^language_model\.lm_head\.": "lm_head."})
        tokenizer = AutoTokenizer.from_pretrained(path)
        if not tokenizer.chat_template:  # the model's own, never a default: prompts must match its training
            tokenizer.chat_template = processor_chat_template(path)
        tokenizer = add_image_token(tokenizer)
    except UserError:
        raise
    except Exception as e:  # safetensors, JSON and shape errors all mean a damaged checkpoint
        raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {first_line(e)}") from None
    if edgelmm_fields(model.config).plain:
        # A plain transformers folder: its MLP projector keeps one token per patch, whatever the
        # image_seq_length its config carries (a processor-side default).
        from edgelmm.modeling.vision_towers import num_patch_tokens

        model.config.image_seq_length = num_patch_tokens(model.config)
    processor_file = path / PREPROCESSOR_FILE
    if processor_file.is_file():
        processor = json.loads(processor_file.read_text())
        spec = processor.get("edgelmm_image_spec")
        image_spec = ImageSpec.from_dict(spec) if spec else ImageSpec.from_hf(processor)
    else:
        from edgelmm.modeling.vision_towers import vision_arch_of

        vc = model.config.vision_config
        image_spec = vision_arch_of(vc.model_type).image_spec(vc.image_size)
    return ModelParts(model, tokenizer, image_spec)


def processor_chat_template(path: Path) -> str:
    """The chat template a llava-hf folder keeps beside its processor (chat_template.jinja, or
    chat_template.json), where its tokenizer has none."""
    jinja, packed = path / "chat_template.jinja", path / "chat_template.json"
    if jinja.is_file():
        return jinja.read_text()
    if packed.is_file():
        try:
            template = json.loads(packed.read_text()).get("chat_template")
        except (json.JSONDecodeError, AttributeError):
            template = None
        if isinstance(template, str) and template:
            return template
    raise CheckpointError(f"{path} has no chat template: its tokenizer_config.json has none and there is no "
                          "chat_template.jinja or chat_template.json; add one (the model's own, as Jinja)")
