"""The edgelmm model: transformers' LLaVA with the projector chosen by `config.projector_type`.

Everything else (vision tower, feature selection, placeholder filling, the LM, generation) is
transformers' own `LlavaForConditionalGeneration`, so checkpoints stay interoperable.
"""

from __future__ import annotations

from transformers import LlavaForConditionalGeneration

from edgelmm.modeling.projectors import build_projector


class EdgeLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.model.multi_modal_projector = build_projector(config)
        self.post_init()

    @property
    def vision_tower(self):
        return self.model.vision_tower

    @property
    def projector(self):
        return self.model.multi_modal_projector

    @property
    def language_model(self):
        return self.model.language_model

