"""Language-model architectures, one module each (phi3, llama, qwen2); adding one is one new file.

Every module here registers its architecture on import (see `base.LanguageArch`).
"""

from __future__ import annotations

import importlib
import pkgutil

from edgelmm.modeling.lm.base import LANGUAGE_ARCHS, LanguageArch, language_arch_of

__all__ = ["LANGUAGE_ARCHS", "LanguageArch", "language_arch_of"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
