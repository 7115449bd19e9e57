"""Export: vision tower + projector to ONNX, language model to GGUF, and the bundle that holds them."""
