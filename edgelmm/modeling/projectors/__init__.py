"""The projector (connector) registry: one file per projector type in this folder.

Every module here registers its projector on import; adding a projector is one new file.
A checkpoint names its projector in `config.projector_type` with arguments in `config.projector_args`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from edgelmm.errors import ConfigError
from edgelmm.registry import Registry

PROJECTORS: Registry[type] = Registry("projector")
DEFAULT_PROJECTOR = "mlp2x_gelu"


def register_projector(name: str):
    return PROJECTORS.register(name)


def projector_class(name: str) -> type:
    return PROJECTORS.get(name)


def projector_spec(config) -> tuple[type, dict]:
    """The projector class and its arguments recorded in a LLaVA config (plain LLaVA: mlp2x_gelu)."""
    return projector_class(getattr(config, "projector_type", None) or DEFAULT_PROJECTOR), \
        dict(getattr(config, "projector_args", None) or {})


def check_projector_args(name: str, args: dict) -> None:
    """Raise a ConfigError when `args` are not arguments of projector `name`."""
    cls = projector_class(name)
    try:
        inspect.signature(cls.num_tokens).bind(None, **args)
    except TypeError as e:
        raise ConfigError(f"bad arguments {args} for projector {name!r}: {e}") from None


def build_projector(config):
    from edgelmm.modeling.projectors.base import ProjectorInput

    cls, args = projector_spec(config)
    return cls(ProjectorInput.from_config(config), **args)


def num_image_tokens(config) -> int:
    """How many `<image>` placeholder tokens one image occupies for this config."""
    from edgelmm.modeling.projectors.base import ProjectorInput

    cls, args = projector_spec(config)
    return cls.num_tokens(ProjectorInput.from_config(config), **args)


for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
