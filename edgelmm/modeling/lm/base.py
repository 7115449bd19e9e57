"""What a language-model architecture is to edgelmm: its transformers config, and its GGUF form.

One module per architecture in this package registers a `LanguageArch` by exact name; building,
checkpoints and the GGUF writer look architectures up here, by the config's `model_type`. Importing
this imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgelmm.errors import ConfigError
from edgelmm.registry import Registry


def _transformers_class(name: str):
    import transformers

    return getattr(transformers, name)


@dataclass(frozen=True)
class LanguageArch:
    """A causal-LM architecture usable as the LLaVA language model."""

    name: str
    config_class: str  # the transformers config class
    model_type: str  # its `model_type`, as written in config.json
    gguf_arch: str  # the gguf-py MODEL_ARCH member llama.cpp runs it as
    # A Hugging Face weight -> the layout llama.cpp expects: (HF name, float32 tensor, text config) -> tensor.
    to_gguf: Callable | None = None

    def make_config(self, **kwargs):
        return _transformers_class(self.config_class)(**kwargs)

    def convert(self, hf_name: str, tensor, config):
        return self.to_gguf(hf_name, tensor, config) if self.to_gguf else tensor


LANGUAGE_ARCHS: Registry[LanguageArch] = Registry("language-model architecture")


def language_arch_of(model_type: str) -> LanguageArch:
    """The registered architecture whose configs carry this `model_type`."""
    return LANGUAGE_ARCHS.find("model_type", model_type, ConfigError)
