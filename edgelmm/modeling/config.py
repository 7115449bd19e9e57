"""Assembling a transformers `LlavaConfig` from a vision config, an LM config and a projector choice.

edgelmm records its own choices as extra config fields (`projector_type`, `projector_args`,
`edgelmm_preset`), which transformers saves and reloads untouched; a plain LLaVA config without them
means the LLaVA-1.5 `mlp2x_gelu` projector.
"""

from __future__ import annotations

from edgelmm.errors import ConfigError
from edgelmm.modeling.vision_towers import vision_arch_of
from edgelmm.modeling.projectors import DEFAULT_PROJECTOR, check_projector_args, num_image_tokens


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
