"""Assembling a transformers `LlavaConfig` from a vision config, an LM config and a projector choice,
and edgelmm's own fields on it, read and written as typed data.

edgelmm records its choices and a model's training as extra config fields (`projector_type`,
`projector_args`, `edgelmm_preset`, `edgelmm_trained`, `edgelmm_stages`), which transformers saves and
reloads untouched; `edgelmm_fields` reads them (a plain LLaVA config without them means the LLaVA-1.5
`mlp2x_gelu` projector and nothing trained by edgelmm) and `record_stage` adds a finished stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgelmm.errors import ConfigError
from edgelmm.modeling.projectors import DEFAULT_PROJECTOR, check_projector_args, num_image_tokens
from edgelmm.modeling.vision_towers import vision_arch_of


@dataclass(frozen=True)
class EdgeFields:
    """edgelmm's fields of a LLaVA config."""

    projector: str  # a name in the projector registry
    projector_args: dict
    plain: bool  # no edgelmm fields at all: a transformers LLaVA folder written by someone else
    preset: str | None  # the preset it was built from, when vision and LM are that preset's
    trained: tuple[str, ...]  # what is trained: "vision", "lm", "projector" (see train.stages)
    stages: tuple[str, ...]  # the training stages run on it, in order


def edgelmm_fields(config) -> EdgeFields:
    projector = getattr(config, "projector_type", None)
    return EdgeFields(projector=projector or DEFAULT_PROJECTOR,
                      projector_args=dict(getattr(config, "projector_args", None) or {}),
                      plain=projector is None, preset=getattr(config, "edgelmm_preset", None),
                      trained=tuple(getattr(config, "edgelmm_trained", None) or ()),
                      stages=tuple(getattr(config, "edgelmm_stages", None) or ()))


def record_trained(config, parts: list[str] | tuple[str, ...]) -> None:
    """Mark `parts` ("vision", "lm", "projector") as trained, beside what already is."""
    config.edgelmm_trained = sorted({*edgelmm_fields(config).trained, *parts})


def record_stage(config, stage: str, provides: str) -> None:
    """A finished training stage: what it trained and its name in the stage history."""
    record_trained(config, [provides])
    config.edgelmm_stages = [*edgelmm_fields(config).stages, stage]


def make_llava_config(vision_config, text_config, *, image_token_id: int, projector: str = DEFAULT_PROJECTOR,
                      projector_args: dict | None = None, feature_layer: int = -2,
                      preset: str | None = None):
    """A LlavaConfig for this tower, LM and projector, with its image-token count filled in."""
    from transformers import LlavaConfig

    arch = vision_arch_of(vision_config.model_type)
    projector_args = dict(projector_args or {})
    check_projector_args(projector, projector_args)
    n_layers = vision_config.num_hidden_layers
    if not -n_layers <= feature_layer <= n_layers:
        raise ConfigError(f"feature layer {feature_layer} is outside the {n_layers}-layer vision tower")
    config = LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=image_token_id,
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy=arch.select_strategy,
        projector_hidden_act="gelu",
        projector_type=projector,
        projector_args=projector_args,
        edgelmm_preset=preset,
    )
    config.image_seq_length = num_image_tokens(config)
    return config
