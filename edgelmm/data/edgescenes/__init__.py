"""EdgeScenes: synthetic scenes with exactly known content, and LLaVA-style data written from them."""

from edgelmm.data.edgescenes.synth import synthesize, text_corpus

__all__ = ["synthesize", "text_corpus"]
