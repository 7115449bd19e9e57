"""edgelmm: small LLaVA-style multimodal models, trained, exported and run on the edge.

Importing this package is cheap on purpose: it pulls in neither torch nor transformers, because the
runtime path has to work on devices that have neither. Training and export code imports them lazily.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def __getattr__(name: str):
    if name == "load":  # the runtime loads ONNX Runtime and llama.cpp, so only when asked for
        from edgelmm.runtime import load

        return load
    raise AttributeError(f"module 'edgelmm' has no attribute {name!r}")
