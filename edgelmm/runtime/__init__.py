"""The runtime: a bundle (vision.onnx + GGUF + edgelmm.json) answering questions about images."""

from edgelmm.runtime.model import Conversation, Model, load

__all__ = ["Conversation", "Model", "load"]
