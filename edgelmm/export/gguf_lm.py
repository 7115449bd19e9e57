"""The language model of a LLaVA checkpoint as a GGUF file that llama.cpp runs.

Tensors are renamed with gguf-py's own tables (the names llama.cpp's converter uses); what differs per
architecture (its GGUF name, any weight layout llama.cpp expects otherwise, as Llama's rotary q/k
permutation) comes from its module in `modeling/lm/`.

Tensors are streamed: the header and tensor index are written from shapes alone, then each tensor is
converted and written in turn, so the writer holds one converted tensor at a time, never a second copy
of the model. A language model on the meta device (shapes only) can be written too, with a function
that makes each tensor's values as it is reached (the real-scale benchmark's random weights).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType, MODEL_ARCH, MODEL_ARCH_NAMES, get_tensor_name_map

from edgelmm.errors import ConfigError
from edgelmm.export.gguf_tokenizer import add_tokenizer
from edgelmm.modeling.lm import language_arch_of

DTYPES = {"f32": (np.float32, LlamaFileType.ALL_F32), "f16": (np.float16, LlamaFileType.MOSTLY_F16)}


def lm_tensors(model):
    """(Hugging Face causal-LM name, tensor) of the language model inside a LLaVA model."""
    for name, tensor in model.model.language_model.state_dict().items():
        yield f"model.{name}", tensor
    if not model.config.tie_word_embeddings:
        yield "lm_head.weight", model.lm_head.weight


def _hparams(writer: GGUFWriter, cfg) -> None:
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads or cfg.num_attention_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(int(head_dim * getattr(cfg, "partial_rotary_factor", 1.0)))
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    writer.add_rope_freq_base(float(theta))
    if rope.get("rope_type", "default") not in ("default", None):
        raise ConfigError(f"RoPE scaling {rope.get('rope_type')!r} is not supported for GGUF export yet")
    writer.add_vocab_size(cfg.vocab_size)


def gguf_arch(text_config) -> MODEL_ARCH:
    """The GGUF architecture of a language-model config, or a ConfigError naming the supported ones."""
    return MODEL_ARCH[language_arch_of(text_config.model_type).gguf_arch]


def export_gguf(parts, path: str | Path, dtype: str = "f32", name: str = "edgelmm",
                materialize=None) -> Path:
    """Write the LM of `parts` (ModelParts) with its tokenizer to a GGUF file at `path`.

    `materialize(hf_name, tensor)` gives the values of a tensor on the meta device; other tensors are
    written as they are.
    """
    cfg = parts.model.config.text_config
    arch = gguf_arch(cfg)
    lm_arch = language_arch_of(cfg.model_type)
    np_dtype, file_type = DTYPES[dtype]
    names = get_tensor_name_map(arch, cfg.num_hidden_layers)
    writer = GGUFWriter(str(path), MODEL_ARCH_NAMES[arch])
    writer.add_name(name)
    writer.add_file_type(file_type)
    _hparams(writer, cfg)
    add_tokenizer(writer, parts.tokenizer, cfg.vocab_size)
    plan = []  # (HF name, tensor, output dtype), in file order
    for hf_name, tensor in lm_tensors(parts.model):
        if "rotary_emb" in hf_name:
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConfigError(f"no GGUF name for tensor {hf_name}")
        # Norms and biases stay float32: llama.cpp expects 1-D tensors unquantized.
        out_dtype = np.dtype(np_dtype if tensor.ndim == 2 else np.float32)
        writer.add_tensor_info(gguf_name, tuple(tensor.shape), out_dtype, tensor.numel() * out_dtype.itemsize)
        plan.append((hf_name, tensor, out_dtype))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for hf_name, tensor, out_dtype in plan:
            if tensor.is_meta:
                if materialize is None:
                    raise ValueError(f"{hf_name} has no values (meta device) and no materialize function was given")
                tensor = materialize(hf_name, tensor)
            t = lm_arch.convert(hf_name, tensor.detach().float(), cfg)  # no copy for a float32 model
            writer.write_tensor_data(t.numpy().astype(out_dtype, copy=False))
    finally:
        writer.close()
    return Path(path)
