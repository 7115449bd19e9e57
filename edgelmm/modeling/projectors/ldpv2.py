"""`ldpv2`: MobileVLM V2's lightweight downsample projector.

An MLP maps each patch to the LM width, average pooling shrinks the patch grid by `pool` on each side
(24x24 = 576 tokens become 12x12 = 144 with the default 2), and a depthwise 3x3 convolution with a
residual connection (a positional encoding generator) restores local position information. On CPUs
and phones the image tokens dominate time to first token, so fewer tokens matter most.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgelmm.errors import ConfigError
from edgelmm.modeling.projectors import register_projector
from edgelmm.modeling.projectors.base import Projector, ProjectorInput


def _pooled_grid(inp: ProjectorInput, pool: int) -> int:
    grid = inp.grid
    if pool < 1 or grid % pool:
        raise ConfigError(f"ldpv2 pool {pool} must divide the {grid}x{grid} patch grid")
    return grid // pool


@register_projector("ldpv2")
class LDPv2Projector(Projector):
    def __init__(self, inp: ProjectorInput, pool: int = 2) -> None:
        super().__init__(inp)
        self.grid, self.pool = inp.grid, pool
        _pooled_grid(inp, pool)
        self.mlp = nn.Sequential(nn.Linear(inp.vision_dim, inp.text_dim), nn.GELU(),
                                 nn.Linear(inp.text_dim, inp.text_dim))
        self.peg = nn.Conv2d(inp.text_dim, inp.text_dim, 3, padding=1, groups=inp.text_dim)

    @classmethod
    def num_tokens(cls, inp: ProjectorInput, pool: int = 2) -> int:
        return _pooled_grid(inp, pool) ** 2

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, n, _ = features.shape  # (B, N, Dv), N = grid * grid
        x = self.mlp(features)  # (B, N, D)
        x = x.transpose(1, 2).reshape(b, -1, self.grid, self.grid)  # (B, D, g, g)
        x = F.avg_pool2d(x, self.pool)  # (B, D, g/p, g/p)
        x = x + self.peg(x)
        return x.flatten(2).transpose(1, 2)  # (B, (g/p)^2, D)
