"""Qwen2 (Qwen2.5-0.5B and kin): biases on q/k/v, often tied embeddings; llama.cpp reads the weights as
they are."""

from edgelmm.modeling.lm.base import LANGUAGE_ARCHS, LanguageArch

LANGUAGE_ARCHS.add("qwen2", LanguageArch("qwen2", "Qwen2Config", "qwen2", gguf_arch="QWEN2"))
