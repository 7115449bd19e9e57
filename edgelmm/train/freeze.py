"""Which parameters learn: the named parts of a LLaVA model, and freezing everything else."""

from __future__ import annotations

from torch import nn

from edgelmm.train.stages import LANGUAGE, PROJECTOR, VISION


def part_modules(model, part: str) -> list[nn.Module]:
    """The modules that make up a named part of an EdgeLlava model."""
    inner = model.model
    return {VISION: [inner.vision_tower], PROJECTOR: [inner.multi_modal_projector],
            LANGUAGE: [inner.language_model, model.lm_head]}[part]


def set_trainable(model, parts: tuple[str, ...]) -> int:
    """Freeze the model except `parts`; returns the number of trainable parameters."""
    model.requires_grad_(False)
    for part in parts:
        for module in part_modules(model, part):
            module.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
