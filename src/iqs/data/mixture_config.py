"""A mixture config (conf/data/<name>.yaml) read and checked: its keys, thresholds and per-source entries."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from iqs.core.classes import CLASS_NAMES
from iqs.core.scale import COMMON_HI, COMMON_LO

MIXTURE_KEYS = (
    "name",
    "seed",
    "val_fraction",
    "test_fraction",
    "demo_dir",
    "demo_seed",
    "sources",
    "held_out",
    "folds",
    "fold",
    "on_bad_image",  # unreadable images: read by iqs.data.bad_images.BadImagePolicy, not by the mixture
    "max_bad_fraction",
)
# keys a mixture adds to a dataset config under sources.<name>
SOURCE_KEYS = ("weight", "thresholds", "keep_classes", "max_samples")
# keys every dataset config may have (adapter-specific keys are validated by the adapter)
DATASET_KEYS = (
    "name",
    "adapter",
    "root",
    "annotations",
    "images",
    "native_range",
    "group_file",
    "check_images",
)
THRESHOLD_KEYS = ("name", "t1", "t2")


class ConfigError(ValueError):
    """A mixture or thresholds config that cannot be used as it is (the message names the key)."""


def did_you_mean(key: str, known: tuple[str, ...] | list[str]) -> str:
    hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" Did you mean '{hint[0]}'?" if hint else ""


def plain(cfg: Any) -> Any:
    """A resolved dict or list from an OmegaConf node (DictConfig or ListConfig); anything else as it is.
    The data package's one converter: the adapters' `reading` re-exports it."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def parse_thresholds(cfg: Mapping | DictConfig, where: str = "thresholds") -> tuple[float, float]:
    """(t1, t2) from `{name, t1, t2}` (conf/thresholds) or `{t1, t2}` (a source override)."""
    cfg = plain(cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}: expected a mapping with t1 and t2, got {cfg!r}")
    for key in cfg:
        if key not in THRESHOLD_KEYS:
            raise ConfigError(f"{where}: unknown key '{key}'.{did_you_mean(key, THRESHOLD_KEYS)}")
    try:
        t1, t2 = float(cfg["t1"]), float(cfg["t2"])
    except KeyError as exc:
        raise ConfigError(f"{where}: missing key {exc.args[0]!r} (need t1 and t2)") from None
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: t1 and t2 must be numbers, got {cfg['t1']!r} and {cfg['t2']!r}"
        ) from None
    if not t1 < t2:
        raise ConfigError(
            f"{where}: thresholds must satisfy t1 < t2 (t1 = bad/normal, t2 = normal/good), got {t1}, {t2}"
        )
    if not (t1 >= COMMON_LO and t2 <= COMMON_HI):
        raise ConfigError(f"{where}: thresholds live on the common scale [1, 10], got {t1}, {t2}")
    return t1, t2


def _parse_keep_classes(value: Any, where: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, int)):
        value = [value]
    out = []
    for v in value:
        if isinstance(v, str) and v in CLASS_NAMES:
            out.append(CLASS_NAMES.index(v))
        elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(CLASS_NAMES):
            out.append(v)
        else:
            raise ConfigError(f"{where}.keep_classes: {v!r} is not a class; use 0/1/2 or bad/normal/good")
    if not out:
        raise ConfigError(f"{where}.keep_classes: empty list keeps nothing; use null to keep all classes")
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class SourceSpec:
    """One validated entry of `sources:`: the dataset config plus what the mixture adds."""

    name: str
    dataset_cfg: dict
    weight: float = 1.0
    thresholds: tuple[float, float] | None = None
    keep_classes: tuple[int, ...] | None = None
    max_samples: int | None = None
    # the composed node itself, so that adapters' errors can name the full key (data.sources.ava.root)
    node: DictConfig | None = None


def parse_source(name: str, cfg: Any) -> SourceSpec:
    where = f"data.sources.{name}"
    node = cfg if isinstance(cfg, DictConfig) else None
    cfg = plain(cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}: expected a dataset config, got {cfg!r}")
    if "adapter" not in cfg:
        raise ConfigError(
            f"{where}: no dataset config (no 'adapter' key). Compose one in the mixture's defaults list, "
            f"e.g. `- /dataset@sources.{name}: {name}`"
        )
    known = (*DATASET_KEYS, *SOURCE_KEYS)
    for key in cfg:
        # adapter-specific keys pass through; a key that looks like a misspelt common key is an error,
        # since it would otherwise be ignored silently
        if key not in known and difflib.get_close_matches(key, known, n=1, cutoff=0.75):
            raise ConfigError(f"{where}: unknown key '{key}'.{did_you_mean(key, known)}")
    weight = cfg.get("weight", 1.0)
    if weight is None:
        weight = 1.0
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise ConfigError(f"{where}.weight: must be a positive number, got {weight!r}")
    thr = cfg.get("thresholds")
    max_samples = cfg.get("max_samples")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ConfigError(f"{where}.max_samples: must be a positive integer or null, got {max_samples!r}")
    dataset_cfg = {k: v for k, v in cfg.items() if k not in SOURCE_KEYS}
    dataset_cfg["name"] = name  # the source's key names it in the table (one dataset may appear twice)
    return SourceSpec(
        name=name,
        dataset_cfg=dataset_cfg,
        weight=float(weight),
        thresholds=None if thr is None else parse_thresholds(thr, f"{where}.thresholds"),
        keep_classes=_parse_keep_classes(cfg.get("keep_classes"), where),
        max_samples=max_samples,
        node=node,
    )
