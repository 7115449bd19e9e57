"""The runtime: a bundle (vision.onnx + GGUF + edgelmm.json) answering questions about images."""

from edgelmm.runtime.model import Answer, Conversation, Model, load

__all__ = ["Answer", "Conversation", "Model", "load"]
