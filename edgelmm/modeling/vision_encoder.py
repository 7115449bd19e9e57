"""The image half of a LLaVA model as one module: pixels in, the embeddings the language model reads out.

It computes exactly the features the language model sees: the configured feature layer, CLS handling and
projector. Layers past the feature layer never influence the output, so they are cut: LLaVA-1.5 reads
the second-to-last layer, and the last layer would be wasted work. The ONNX export and the torch
backend both run it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgelmm.errors import ConfigError


def feature_depth(config) -> int:
    """How many tower layers LLaVA's features pass through (they are hidden_states[depth])."""
    layer = config.vision_feature_layer
    if not isinstance(layer, int):
        raise ConfigError("the vision encoder takes one feature layer; this model concatenates several")
    n_layers = config.vision_config.num_hidden_layers
    return layer if layer >= 0 else n_layers + 1 + layer  # hidden_states[0] is the embedding output


class VisionEncoder(nn.Module):
    """The image half of a LLaVA model, as the language model consumes it."""

    def __init__(self, model) -> None:
        super().__init__()
        config = model.config
        depth = feature_depth(config)
        self.tower = copy.deepcopy(model.model.vision_tower)
        self.tower.encoder.layers = self.tower.encoder.layers[:depth]
        self.drop_cls = config.vision_feature_select_strategy == "default"
        self.projector = model.model.multi_modal_projector

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values=pixel_values, output_hidden_states=True).hidden_states[-1]  # (B, P, Dv)
        if self.drop_cls:
            hidden = hidden[:, 1:]
        return self.projector(hidden)  # (B, N, D_lm)
