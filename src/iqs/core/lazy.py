"""Packages that import their public names on first use (PEP 562 module `__getattr__`).

Importing one submodule imports its package first; a package `__init__` that imported every name would
pull in what the other submodules need (timm and torchvision for `iqs.models`, Lightning for
`iqs.tracking`, torch for `iqs.metrics`) even for `iqs compare`, which needs none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `where` maps each public name to the submodule defining it."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return __getattr__
