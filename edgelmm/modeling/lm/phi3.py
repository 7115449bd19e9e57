"""Phi-3 (Phi-3-mini and the edgelmm presets): llama.cpp's phi3 graph reads Hugging Face's weights as
they are (fused qkv and gate-up projections, rotary halves)."""

from edgelmm.modeling.lm.base import LANGUAGE_ARCHS, LanguageArch

LANGUAGE_ARCHS.add("phi3", LanguageArch("phi3", "Phi3Config", "phi3", gguf_arch="PHI3"))
