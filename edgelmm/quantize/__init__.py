"""Quantization: int4/int8 GGUF through llama.cpp's own quantizer, int8/fp16 ONNX for the vision side."""
