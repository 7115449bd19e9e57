"""Backends: what runs the vision graph and the language model behind `edgelmm.load`.

A backend is one module in this package whose `BACKEND` names its class (see `base.Backend` for what
the class offers); its name is the module's name, which the class repeats as `name`. Other packages add backends through the
`edgelmm.backends` entry-point group (`toy = "mypackage.toy:ToyBackend"`). So a new backend is one new
file and no edit elsewhere. Listing names imports nothing.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from edgelmm.errors import UnknownNameError

DEFAULT_BACKEND = "llamacpp"  # ONNX Runtime + llama.cpp, torch-free
ENTRY_POINT_GROUP = "edgelmm.backends"
_NOT_BACKENDS = {"base"}


def _builtin() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_BACKENDS]


def _plugins() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    """Every backend: this package's modules, then those that installed packages register."""
    builtin = _builtin()
    return builtin + [name for name in _plugins() if name not in builtin]


def backend_class(name: str):
    """The backend class registered as `name` ("auto" picks the default)."""
    name = DEFAULT_BACKEND if name == "auto" else name
    if name in _builtin():
        return importlib.import_module(f"{__name__}.{name}").BACKEND
    plugin = _plugins().get(name)
    if plugin is None:
        raise UnknownNameError(f"unknown backend {name!r}; valid: auto, {', '.join(backend_names())}")
    return plugin.load()
