"""A registry of named components (projectors, presets, architectures).

Names are exact: an unknown name raises an error listing the valid ones, and registering a name twice
raises instead of silently replacing the first entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgelmm.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from exact names to components of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda item: self.add(name, item)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(self._items) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def find(self, attribute: str, value, error: type[Exception] = UnknownNameError) -> T:
        """The component whose `attribute` equals `value` (a config's `model_type`, say); else `error`
        listing the values there are."""
        for item in self._items.values():
            if getattr(item, attribute) == value:
                return item
        supported = ", ".join(str(getattr(item, attribute)) for item in self._items.values())
        raise error(f"unsupported {self.kind} {value!r}; supported: {supported}")

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
