"""LLaVA's projectors: `linear` (LLaVA) and `mlp2x_gelu` (LLaVA-1.5, the default).

Both keep one embedding per patch. Their weights are named as in transformers'
LlavaMultiModalProjector (`linear_1`, `linear_2`), so an `mlp2x_gelu` checkpoint loads in plain
transformers `LlavaForConditionalGeneration`.
"""

from __future__ import annotations

import torch
from torch import nn

from edgelmm.modeling.projectors import register_projector
from edgelmm.modeling.projectors.base import Projector, ProjectorInput


@register_projector("linear")
class LinearProjector(Projector):
    def __init__(self, inp: ProjectorInput) -> None:
        super().__init__(inp)
        self.linear_1 = nn.Linear(inp.vision_dim, inp.text_dim, bias=inp.bias)

    @classmethod
    def num_tokens(cls, inp: ProjectorInput) -> int:
        return inp.num_patches

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, N, Dv) -> (B, N, D)
        return self.linear_1(features)


@register_projector("mlp2x_gelu")
class MlpGeluProjector(Projector):
    def __init__(self, inp: ProjectorInput) -> None:
        super().__init__(inp)
        self.linear_1 = nn.Linear(inp.vision_dim, inp.text_dim, bias=inp.bias)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(inp.text_dim, inp.text_dim, bias=inp.bias)

    @classmethod
    def num_tokens(cls, inp: ProjectorInput) -> int:
        return inp.num_patches

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, N, Dv) -> (B, N, D)
        return self.linear_2(self.act(self.linear_1(features)))
