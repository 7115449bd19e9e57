"""Llama: llama.cpp's graph rotates interleaved pairs where Hugging Face rotates halves, so the q and k
projections are permuted into llama.cpp's layout, per head (as llama.cpp's own converter does)."""

from edgelmm.modeling.lm.base import LANGUAGE_ARCHS, LanguageArch


def permute_rope(w, n_head: int):
    """Hugging Face's rotary layout (halves) -> llama.cpp's (interleaved pairs), per head."""
    out = w.shape[0]
    return w.reshape(n_head, 2, out // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_to_gguf(hf_name: str, tensor, config):
    if hf_name.endswith("q_proj.weight"):
        return permute_rope(tensor, config.num_attention_heads)
    if hf_name.endswith("k_proj.weight"):
        return permute_rope(tensor, config.num_key_value_heads or config.num_attention_heads)
    return tensor


LANGUAGE_ARCHS.add("llama", LanguageArch("llama", "LlamaConfig", "llama", gguf_arch="LLAMA", to_gguf=rope_to_gguf))
