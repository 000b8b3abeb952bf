"""Name -> object registries (as in timm / pyiqa): duplicates are errors, unknown names get a hint."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            hint = difflib.get_close_matches(name, self._items, n=1)
            did_you_mean = f" Did you mean '{hint[0]}'?" if hint else ""
            raise KeyError(
                f"unknown {self.kind} '{name}'.{did_you_mean} Known: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def import_submodules(package: str) -> list[str]:
    """Import every module of `package` (not sub-packages), so the plug-ins register themselves.

    A new head, rebalancer, adapter or loss is one file in its package: no import list to edit.
    """
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.ispkg)
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
