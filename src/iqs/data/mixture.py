"""A mixture of dataset sources: labels, splits, cross-dataset dedup, weights (DESIGN.md).

    mix = build_mixture(cfg.data, cfg.thresholds)
    mix.table            # one row per image: SampleTable + label + source_weight, split in train/val/test
    mix.split("test")    # rows of one split
    mix.abs_paths(df)    # root / path per row
    mix.removed          # rows dropped by dedup, with the reason

Steps, in order, and why in that order:
1. load each source with its adapter;
2. label it with its thresholds (the source's override or the mixture's pair);
3. keep_classes: drop the other classes from all of the source's splits (the rows never enter the
   mixture, so they cannot leak either);
4. split by group over the whole mixture (iqs.data.splits; with `folds: k, fold: i`, k-fold
   cross-validation over groups), then dedup across sources;
5. max_samples: cap the source's *train* rows; val and test stay intact so that evaluation is the same
   with or without the cap. The kept rows are those with the smallest seeded hash of their id, so a
   larger cap keeps a superset of a smaller one (learning curves compare nested training sets).
6. held_out (leave-one-dataset-out): the named source loses its train and val rows and keeps its
   test rows, so a run trains and early-stops on the other sources only and is tested on the held-out
   one. Its test rows are the very images of its test split in every other run with the same seed,
   so LODO and in-domain runs compare on the same images; and since the split is by group, no test
   photograph is trained on through another source either (the demo's sources share photographs).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from iqs.data.scale import CLASS_NAMES, COMMON_HI, COMMON_LO, assign_labels
from iqs.data.splits import (
    REMOVED_COLUMNS,
    assign_splits,
    check_folds,
    check_fractions,
    dedupe,
    group_uniform,
)
from iqs.data.table import COLUMNS, SPLITS, fingerprint, validate_table

log = logging.getLogger(__name__)

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


def _did_you_mean(key: str, known: tuple[str, ...] | list[str]) -> str:
    hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" Did you mean '{hint[0]}'?" if hint else ""


def _plain(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def parse_thresholds(cfg: Mapping | DictConfig, where: str = "thresholds") -> tuple[float, float]:
    """(t1, t2) from `{name, t1, t2}` (conf/thresholds) or `{t1, t2}` (a source override)."""
    cfg = _plain(cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}: expected a mapping with t1 and t2, got {cfg!r}")
    for key in cfg:
        if key not in THRESHOLD_KEYS:
            raise ConfigError(f"{where}: unknown key '{key}'.{_did_you_mean(key, THRESHOLD_KEYS)}")
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
    cfg = _plain(cfg)
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
            raise ConfigError(f"{where}: unknown key '{key}'.{_did_you_mean(key, known)}")
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


@dataclass
class Mixture:
    name: str
    table: pd.DataFrame
    sources: dict[str, Any]  # name -> iqs.data.adapters.SourceData as loaded (before labels/splits)
    roots: dict[str, Path]
    removed: pd.DataFrame
    missing: dict[str, list[str]]
    thresholds: tuple[float, float]
    source_thresholds: dict[str, tuple[float, float]]
    weights: dict[str, float] = field(default_factory=dict)
    keep_classes: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    # rows a source lost on purpose: {"keep_classes": n, "max_samples": n, "held_out": n}
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    seed: int = 0
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    held_out: str | None = None  # leave-one-dataset-out: the source that is only tested on
    folds: int | None = None  # k-fold cross-validation over groups: k, and the tested fold
    fold: int | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.table)

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise ValueError(f"unknown split '{name}'; expected one of {', '.join(SPLITS)}")
        return self.table[self.table["split"] == name]

    def abs_paths(self, df: pd.DataFrame | None = None) -> np.ndarray:
        """Absolute image path per row: the source's root joined with the row's relative path."""
        df = self.table if df is None else df
        roots = df["dataset"].map({k: str(v) for k, v in self.roots.items()})
        if roots.isna().any():
            unknown = sorted(set(df.loc[roots.isna(), "dataset"]))
            raise KeyError(f"rows from sources {unknown} that are not in mixture '{self.name}'")
        return (roots + "/" + df["path"].astype(str)).to_numpy(dtype=object).astype(str)


def _load(spec: SourceSpec) -> tuple[Any, pd.DataFrame]:
    from iqs.data.adapters import load_source

    # adapters ignore the mixture's keys (weight, ...), so the composed node can go as it is
    use_node = spec.node is not None and spec.node.get("name") == spec.name
    source = load_source(spec.node if use_node else OmegaConf.create(spec.dataset_cfg))
    table = source.table
    validate_table(table)
    if (table["dataset"] != spec.name).any():
        table = table.assign(dataset=spec.name)
    return source, table


def _cap_train(table: pd.DataFrame, name: str, max_samples: int, seed: int) -> tuple[pd.DataFrame, int]:
    train = table.index[(table["dataset"] == name) & (table["split"] == "train")]
    if len(train) <= max_samples:
        return table, 0
    keys = ("max_samples:" + name + ":" + table.loc[train, "image_id"].astype(str)).to_numpy()
    order = np.argsort(group_uniform(keys, seed), kind="stable")
    drop = train[order[max_samples:]]
    return table.drop(index=drop), len(drop)


def build_mixture(data_cfg: Mapping | DictConfig, thresholds_cfg: Mapping | DictConfig) -> Mixture:
    """Load, label, split and dedupe every source of a mixture config (conf/data/<name>.yaml)."""
    data = _plain(data_cfg)
    for key in data:
        if key not in MIXTURE_KEYS:
            raise ConfigError(f"data: unknown key '{key}'.{_did_you_mean(key, MIXTURE_KEYS)}")
    name = str(data.get("name") or "mixture")
    seed = int(data.get("seed") or 0)
    val_fraction = float(data.get("val_fraction", 0.1))
    test_fraction = float(data.get("test_fraction", 0.1))
    folds, fold = data.get("folds"), data.get("fold")
    try:
        check_folds(folds, fold)
        check_fractions(val_fraction, 0.0 if folds else test_fraction)
    except ValueError as exc:
        raise ConfigError(f"data: {exc}") from None
    thresholds = parse_thresholds(thresholds_cfg)
    sources_cfg = data.get("sources") or {}
    if not sources_cfg:
        raise ConfigError(f"data ({name}): no sources")
    if isinstance(data_cfg, DictConfig) and data_cfg.get("sources") is not None:
        sources_cfg = data_cfg.sources  # keep the nodes (full keys in error messages)
    specs = [parse_source(str(k), v) for k, v in sources_cfg.items()]
    held_out = data.get("held_out")
    if held_out is not None and str(held_out) not in {s.name for s in specs}:
        names = [s.name for s in specs]
        raise ConfigError(
            f"data.held_out: '{held_out}' is not a source of this mixture ({', '.join(names)})."
            f"{_did_you_mean(str(held_out), names)}"
        )
    if held_out is not None and len(specs) < 2:
        raise ConfigError("data.held_out: leaving out the only source leaves nothing to train on")

    if data.get("demo_dir"):
        from iqs.data.demo import ensure_demo

        ensure_demo(Path(data["demo_dir"]), seed=int(data.get("demo_seed") or 0))

    loaded, parts, dropped, source_thresholds = {}, [], {}, {}
    for spec in specs:
        source, table = _load(spec)
        loaded[spec.name] = source
        t1, t2 = spec.thresholds or thresholds
        source_thresholds[spec.name] = (t1, t2)
        table = table.assign(
            label=assign_labels(table["score"].to_numpy(), t1, t2), source_weight=spec.weight
        )
        dropped[spec.name] = {"keep_classes": 0, "max_samples": 0, "held_out": 0}
        if spec.keep_classes is not None:
            keep = table["label"].isin(spec.keep_classes)
            dropped[spec.name]["keep_classes"] = int((~keep).sum())
            table = table[keep]
            if table.empty:
                log.warning("%s: no rows left after keep_classes %s", spec.name, list(spec.keep_classes))
        parts.append(table)

    table = pd.concat(parts, ignore_index=True)
    table["split"] = assign_splits(table, seed, val_fraction, test_fraction, folds, fold)
    table, removed = dedupe(table)
    for spec in specs:
        if spec.max_samples is not None:
            table, n = _cap_train(table, spec.name, spec.max_samples, seed)
            dropped[spec.name]["max_samples"] = n
    if held_out is not None:
        gone = (table["dataset"] == str(held_out)) & (table["split"] != "test")
        dropped[str(held_out)]["held_out"] = int(gone.sum())
        table = table[~gone]
    table = table.reset_index(drop=True)[[*COLUMNS, "label", "source_weight"]]
    table["label"] = table["label"].astype(np.int64)
    table["source_weight"] = table["source_weight"].astype(np.float64)

    mix = Mixture(
        name=name,
        table=table,
        sources=loaded,
        roots={k: Path(s.root) for k, s in loaded.items()},
        removed=removed[REMOVED_COLUMNS],
        missing={k: list(s.missing) for k, s in loaded.items()},
        thresholds=thresholds,
        source_thresholds=source_thresholds,
        weights={s.name: s.weight for s in specs},
        keep_classes={s.name: s.keep_classes for s in specs},
        dropped=dropped,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        held_out=None if held_out is None else str(held_out),
        folds=folds,
        fold=fold,
    )
    log.info(
        "mixture %s: %d images, splits %s, fingerprint %s",
        name,
        len(table),
        table["split"].value_counts().to_dict(),
        mix.fingerprint,
    )
    return mix


def single_source_mixture(
    dataset_cfg: Mapping | DictConfig,
    thresholds_cfg: Mapping | DictConfig,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Mixture:
    """A mixture of one dataset config (conf/dataset/<name>.yaml), e.g. for `iqs data stats dataset=ava`."""
    ds = dict(_plain(dataset_cfg))
    name = str(ds.get("name") or ds.get("adapter") or "dataset")
    data = {
        "name": name,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "sources": {name: dataset_cfg if isinstance(dataset_cfg, DictConfig) else ds},
    }
    return build_mixture(data, thresholds_cfg)
