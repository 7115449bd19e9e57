"""The image half of a LLaVA model as one module: pixels in, the embeddings the language model reads out.

It computes exactly the features the language model sees: the configured feature layer (or layers,
concatenated along the features as transformers does), CLS handling and projector. Layers past the
deepest feature layer never influence the output, so they are cut: LLaVA-1.5 reads the second-to-last
layer, and the last layer would be wasted work. The ONNX export and the torch backend both run it.

With `importance`, it also returns how much each image token matters, for dropping the least important
ones at inference (VisionZip's signal): the attention the CLS token pays each patch (CLIP), or, for
towers without CLS (SigLIP), the mean attention each token receives, averaged over heads and over every
layer up to the feature layer. VisionZip reads the feature layer alone; on the demo model's small tower
the average over layers kept more of the answers at 1/4 and 1/8 of the tokens (58.0% and 57.8% exact
match against 55.3% and 54.8%, in PyTorch on 1000 held-out questions; the README has the comparison),
and for a deep tower it is no worse a summary of where the tower looked. Only projectors that keep one embedding per patch have per-token
scores.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgelmm.errors import ConfigError


def feature_depths(config) -> list[int]:
    """Which hidden states LLaVA's features are (hidden_states[0] is the embedding output): one, or
    several concatenated."""
    layers = config.vision_feature_layer
    layers = [layers] if isinstance(layers, int) else list(layers) if isinstance(layers, (list, tuple)) else []
    n_layers = config.vision_config.num_hidden_layers
    if not layers or not all(isinstance(x, int) and not isinstance(x, bool) and -n_layers - 1 <= x <= n_layers
                             for x in layers):
        raise ConfigError(f"vision_feature_layer {config.vision_feature_layer!r} names no layer of a "
                          f"{n_layers}-layer tower")
    return [layer if layer >= 0 else n_layers + 1 + layer for layer in layers]


def feature_depth(config) -> int:
    """How many tower layers LLaVA's features pass through, for consumers that take one feature layer."""
    depths = feature_depths(config)
    if len(depths) != 1:
        raise ConfigError("this model concatenates several vision feature layers; llama.cpp's graph takes one")
    return depths[0]


def has_token_scores(config) -> bool:
    """Whether the projector keeps one embedding per vision token, so that tokens have their own scores."""
    from edgelmm.modeling.projectors import num_image_tokens
    from edgelmm.modeling.vision_towers import num_patch_tokens

    return num_image_tokens(config) == num_patch_tokens(config)


class VisionEncoder(nn.Module):
    """The image half of a LLaVA model, as the language model consumes it."""

    def __init__(self, model, importance: bool = False) -> None:
        super().__init__()
        config = model.config
        self.depths = feature_depths(config)
        if importance and not has_token_scores(config):
            raise ConfigError("this projector merges vision tokens, so its image tokens have no importance scores")
        self.tower = copy.deepcopy(model.model.vision_tower)
        self.tower.encoder.layers = self.tower.encoder.layers[:max(self.depths)]
        self.drop_cls = config.vision_feature_select_strategy == "default"
        self.has_cls = hasattr(self.tower.embeddings, "class_embedding")
        self.projector = model.model.multi_modal_projector
        self.importance = importance
        if importance:
            self.tower.set_attn_implementation("eager")  # only eager attention returns its weights

    def forward(self, pixel_values: torch.Tensor):
        out = self.tower(pixel_values=pixel_values, output_hidden_states=True, output_attentions=self.importance)
        hidden = torch.cat([out.hidden_states[d] for d in self.depths], dim=-1)  # (B, P, Dv x layers)
        if self.drop_cls:
            hidden = hidden[:, 1:]
        embeds = self.projector(hidden)  # (B, N, D_lm)
        if not self.importance:
            return embeds
        attention = torch.stack(out.attentions).mean(dim=(0, 2))  # (B, P, P): over layers and heads
        if self.has_cls:
            scores = attention[:, 0, :]  # (B, P): what CLS attends to
            scores = scores[:, 1:] if self.drop_cls else scores
        else:
            scores = attention.mean(dim=1)  # (B, P): attention each token receives
        return embeds, scores  # (B, N, D_lm), (B, N)
