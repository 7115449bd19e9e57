"""Building, saving and loading LLaVA-style models (needs the `train` extra: torch, transformers)."""

from edgelmm.modeling.build import ModelParts, build_model
from edgelmm.modeling.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["ModelParts", "build_model", "load_checkpoint", "save_checkpoint"]
