"""`resampler`: a fixed number of learned queries cross-attend to the patch features.

The idea behind BLIP-2's Q-Former and Flamingo's Perceiver Resampler: the LM sees `num_queries`
image embeddings whatever the tower's resolution, so image cost is fixed and chosen by the user.
Patch features get a learned position embedding before attention, since attention alone is
order-blind; a residual MLP follows the cross-attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgelmm.errors import ConfigError
from edgelmm.modeling.projectors import register_projector
from edgelmm.modeling.projectors.base import Projector, ProjectorInput


@register_projector("resampler")
class ResamplerProjector(Projector):
    def __init__(self, inp: ProjectorInput, num_queries: int = 64, num_heads: int | None = None) -> None:
        super().__init__(inp)
        d = inp.text_dim
        self.num_heads = num_heads or max(h for h in range(1, max(d // 64, 1) + 1) if d % h == 0)
        if num_queries < 1 or d % self.num_heads:
            raise ConfigError(f"resampler needs num_queries >= 1 and heads dividing {d}, "
                              f"got {num_queries} queries, {self.num_heads} heads")
        self.queries = nn.Parameter(torch.randn(num_queries, d) * 0.02)  # (Q, D)
        self.pos = nn.Parameter(torch.randn(inp.num_patches, d) * 0.02)  # (N, D)
        self.kv_in = nn.Linear(inp.vision_dim, d)
        self.norm_q, self.norm_kv = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    @classmethod
    def num_tokens(cls, inp: ProjectorInput, num_queries: int = 64, num_heads: int | None = None) -> int:
        return num_queries

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, H, L, D/H)
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b = features.shape[0]  # features: (B, N, Dv)
        kv = self.norm_kv(self.kv_in(features) + self.pos)  # (B, N, D)
        q = self.norm_q(self.queries).expand(b, -1, -1)  # (B, Q, D)
        att = F.scaled_dot_product_attention(self._heads(self.q(q)), self._heads(self.k(kv)),
                                             self._heads(self.v(kv)))  # (B, H, Q, D/H)
        x = self.queries + self.o(att.transpose(1, 2).flatten(2))  # (B, Q, D)
        return x + self.mlp(self.norm_mlp(x))
