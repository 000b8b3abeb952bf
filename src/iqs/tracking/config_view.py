"""Reading a run's config, whether a Hydra `DictConfig` or a plain nested dict: one key, the whole
resolved tree, or the flat `a.b.c -> text` form that MLflow stores as params.

The lowest layer of iqs.tracking: it imports nothing else from the package, so every other module may use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """`cfg.a.b` for a DictConfig or a nested dict, `default` when any level is missing or null."""
    if cfg is None:
        return default
    if isinstance(cfg, DictConfig):
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    else:
        value = cfg
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
            if value is None:
                break
    return default if value is None else value


def to_container(cfg: Any) -> dict:
    """Plain resolved dict of a config (DictConfig or mapping); interpolation errors name the key."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
    return dict(cfg or {})


def flatten_config(cfg: Any, prefix: str = "") -> dict[str, str]:
    """Resolved config as MLflow params: dot keys, string values (lists as `[a, b]`, null as `null`)."""
    flat: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
            return
        if node is None:
            text = "null"
        elif isinstance(node, Mapping):
            text = "{}"
        elif isinstance(node, list | tuple):
            text = "[" + ", ".join("null" if x is None else str(x) for x in node) + "]"
        else:
            text = str(node)
        flat[key] = text

    walk(to_container(cfg), prefix)
    return flat


def safe_name(text: Any) -> str:
    """`text` reduced to the characters MLflow names and file names accept (`[A-Za-z0-9_.+-]`), never empty."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(text)).strip("_") or "x"
