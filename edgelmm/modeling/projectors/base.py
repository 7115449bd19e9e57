"""What every projector (connector) receives and promises.

A projector maps the vision tower's selected features (B, N, D_vision) to image embeddings
(B, T, D_lm) that replace the `<image>` placeholder tokens in the language model's input.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass

from torch import nn

from edgelmm.errors import ConfigError
from edgelmm.modeling.vision_towers import num_patch_tokens


@dataclass(frozen=True)
class ProjectorInput:
    """The shapes a projector is built for, read from a LLaVA config."""

    vision_dim: int  # width of the selected vision features
    text_dim: int  # the language model's hidden size
    num_patches: int  # N: vision tokens per image reaching the projector (CLS included if kept)
    bias: bool = True

    @property
    def grid(self) -> int:
        """Side of the square patch grid; only defined when N is a square (no CLS token kept)."""
        side = math.isqrt(self.num_patches)
        if side * side != self.num_patches:
            raise ConfigError(f"{self.num_patches} vision tokens do not form a square patch grid "
                              "(keep the CLS token out: vision_feature_select_strategy='default')")
        return side

    @classmethod
    def from_config(cls, config) -> ProjectorInput:
        layers = config.vision_feature_layer
        n_layers = 1 if isinstance(layers, int) else len(layers)
        return cls(vision_dim=config.vision_config.hidden_size * n_layers,
                   text_dim=config.text_config.hidden_size,
                   num_patches=num_patch_tokens(config),
                   bias=getattr(config, "multimodal_projector_bias", True))


class Projector(nn.Module, metaclass=ABCMeta):
    """Base class: subclasses take (ProjectorInput, **projector_args) and define `num_tokens`."""

    def __init__(self, inp: ProjectorInput) -> None:
        super().__init__()
        self.inp = inp

    @classmethod
    @abstractmethod
    def num_tokens(cls, inp: ProjectorInput, **args) -> int:
        """T: image embeddings produced per image."""
