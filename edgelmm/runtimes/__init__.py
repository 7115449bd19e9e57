"""Runtimes: running exported bundles (ONNX Runtime vision + llama.cpp language model)."""
