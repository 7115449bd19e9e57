"""The vision towers edgelmm builds on (CLIP, SigLIP), by exact name, and what follows from them: the
image preprocessing of each family and how many vision tokens reach the projector.

Each entry names a transformers config class; nothing here imports transformers until a config is built,
so listing names stays cheap. Language models have one module each in `modeling/lm/`.
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


VISION_ARCHS: Registry[VisionArch] = Registry("vision tower")

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

VISION_ARCHS.add("clip", VisionArch("clip", "CLIPVisionConfig", "CLIPVisionModel", "clip_vision_model", True, "default",
                                    _CLIP_MEAN, _CLIP_STD, "shortest_edge_crop"))
VISION_ARCHS.add("siglip", VisionArch("siglip", "SiglipVisionConfig", "SiglipVisionModel", "siglip_vision_model", False, "full",
                                      (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "squash"))


def vision_arch_of(model_type: str) -> VisionArch:
    """The registered vision family whose configs carry this `model_type`."""
    return VISION_ARCHS.find("model_type", model_type, ConfigError)


def num_patch_tokens(config) -> int:
    """Vision tokens per image that reach the projector: the patches, plus CLS when it is kept."""
    vc = config.vision_config
    arch = vision_arch_of(vc.model_type)
    n = (vc.image_size // vc.patch_size) ** 2
    if arch.has_cls and config.vision_feature_select_strategy == "full":
        n += 1
    return n
