"""The vision towers and language-model architectures edgelmm builds on, by exact name.

Each entry names a transformers config class; nothing here imports transformers until a config is built,
so listing names stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgelmm.errors import ConfigError
from edgelmm.imaging import ImageSpec
from edgelmm.registry import Registry


def _transformers_class(name: str):
    import transformers

    return getattr(transformers, name)


@dataclass(frozen=True)
class VisionArch:
    """A ViT family usable as a LLaVA vision tower."""

    name: str
    config_class: str  # the transformers vision config class
    model_class: str  # the transformers vision model class (what LLaVA uses as its tower)
    model_type: str  # its `model_type`, as written in config.json
    has_cls: bool  # whether the tower prepends a CLS token to the patch tokens
    select_strategy: str  # LLaVA's vision_feature_select_strategy: "default" drops CLS, "full" keeps all
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    resize: str  # ImageSpec.resize rule of this family's image processor

    def make_config(self, **kwargs):
        return _transformers_class(self.config_class)(**kwargs)

    def model_cls(self):
        return _transformers_class(self.model_class)

    def image_spec(self, size: int) -> ImageSpec:
        return ImageSpec(size=size, resize=self.resize, mean=self.image_mean, std=self.image_std)


@dataclass(frozen=True)
class LanguageArch:
    """A causal-LM architecture usable as the LLaVA language model."""

    name: str
    config_class: str
    model_type: str

    def make_config(self, **kwargs):
        return _transformers_class(self.config_class)(**kwargs)


VISION_ARCHS: Registry[VisionArch] = Registry("vision tower")
LANGUAGE_ARCHS: Registry[LanguageArch] = Registry("language-model architecture")

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

VISION_ARCHS.add("clip", VisionArch("clip", "CLIPVisionConfig", "CLIPVisionModel", "clip_vision_model", True, "default",
                                    _CLIP_MEAN, _CLIP_STD, "shortest_edge_crop"))
VISION_ARCHS.add("siglip", VisionArch("siglip", "SiglipVisionConfig", "SiglipVisionModel", "siglip_vision_model", False, "full",
                                      (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "squash"))

LANGUAGE_ARCHS.add("phi3", LanguageArch("phi3", "Phi3Config", "phi3"))
LANGUAGE_ARCHS.add("llama", LanguageArch("llama", "LlamaConfig", "llama"))
LANGUAGE_ARCHS.add("qwen2", LanguageArch("qwen2", "Qwen2Config", "qwen2"))


def _by_model_type(registry: Registry, model_type: str):
    for name in registry:
        if registry.get(name).model_type == model_type:
            return registry.get(name)
    supported = ", ".join(registry.get(n).model_type for n in registry)
    raise ConfigError(f"unsupported {registry.kind} {model_type!r}; supported: {supported}")


def vision_arch_of(model_type: str) -> VisionArch:
    """The registered vision family whose configs carry this `model_type`."""
    return _by_model_type(VISION_ARCHS, model_type)


def language_arch_of(model_type: str) -> LanguageArch:
    """The registered LM architecture whose configs carry this `model_type`."""
    return _by_model_type(LANGUAGE_ARCHS, model_type)


def num_patch_tokens(config) -> int:
    """Vision tokens per image that reach the projector: the patches, plus CLS when it is kept."""
    vc = config.vision_config
    arch = vision_arch_of(vc.model_type)
    n = (vc.image_size // vc.patch_size) ** 2
    if arch.has_cls and config.vision_feature_select_strategy == "full":
        n += 1
    return n
