"""edgelmm: small LLaVA-style multimodal models, trained, exported and run on the edge.

Importing this package is cheap on purpose: it pulls in neither torch nor transformers, because the
runtime path has to work on devices that have neither. Training and export code imports them lazily.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
