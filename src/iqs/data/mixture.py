"""A mixture of dataset sources: labels, splits, cross-dataset dedup, weights (README, "Labels and splits").

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

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from iqs.core.scale import assign_labels
from iqs.data.mixture_config import (
    MIXTURE_KEYS,
    ConfigError,
    SourceSpec,
    did_you_mean,
    parse_source,
    parse_thresholds,
    plain,
)
from iqs.data.splits import (
    REMOVED_COLUMNS,
    assign_splits,
    check_folds,
    check_fractions,
    dedupe,
    group_uniform,
)
from iqs.data.table import COLUMNS, SPLITS, fingerprint, validate_table

__all__ = [
    "ConfigError",
    "Mixture",
    "build_mixture",
    "ensure_data",
    "parse_thresholds",
    "single_source_mixture",
]

log = logging.getLogger(__name__)


def ensure_data(data_cfg: Mapping | DictConfig) -> None:
    """Build the sources a data config builds on first use (the demo: `demo_dir`, `demo_seed`).

    Called by the commands before `build_mixture`, which only reads what exists.
    """
    data = plain(data_cfg)
    if data.get("demo_dir"):
        from iqs.data.demo import ensure_demo

        ensure_demo(Path(data["demo_dir"]), seed=int(data.get("demo_seed") or 0))


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


def checked_config(
    data_cfg: Mapping | DictConfig, thresholds_cfg: Mapping | DictConfig
) -> tuple[
    dict, str, tuple[int, float, float, int | None, int | None], tuple[float, float], list, str | None
]:
    """What a mixture config says, checked without reading any file: (plain config, name, split settings,
    thresholds, source specs, held-out source). `iqs train` calls it before it opens an MLflow run."""
    data = plain(data_cfg)
    for key in data:
        if key not in MIXTURE_KEYS:
            raise ConfigError(f"data: unknown key '{key}'.{did_you_mean(key, MIXTURE_KEYS)}")
    name = str(data.get("name") or "mixture")
    split = _split_settings(data)
    thresholds = parse_thresholds(thresholds_cfg)
    specs = _source_specs(data_cfg, data, name)
    return data, name, split, thresholds, specs, _held_out(data.get("held_out"), specs)


def build_mixture(data_cfg: Mapping | DictConfig, thresholds_cfg: Mapping | DictConfig) -> Mixture:
    """Load, label, split and dedupe every source of a mixture config (conf/data/<name>.yaml)."""
    data, name, (seed, val_fraction, test_fraction, folds, fold), thresholds, specs, held_out = (
        checked_config(data_cfg, thresholds_cfg)
    )

    loaded, parts, dropped, source_thresholds = {}, [], {}, {}
    for spec in specs:
        loaded[spec.name], table, dropped[spec.name] = _labelled_source(spec, thresholds)
        source_thresholds[spec.name] = spec.thresholds or thresholds
        parts.append(table)

    table = pd.concat(parts, ignore_index=True)
    table["split"] = assign_splits(table, seed, val_fraction, test_fraction, folds, fold)
    table, removed = dedupe(table)
    table = _cap_and_hold_out(table, specs, held_out, seed, dropped)
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
        held_out=held_out,
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


def _split_settings(data: Mapping) -> tuple[int, float, float, int | None, int | None]:
    """seed, val_fraction, test_fraction, folds and fold of a mixture config, checked."""
    seed = int(data.get("seed") or 0)
    val_fraction = float(data.get("val_fraction", 0.1))
    test_fraction = float(data.get("test_fraction", 0.1))
    folds, fold = data.get("folds"), data.get("fold")
    try:
        check_folds(folds, fold)
        check_fractions(val_fraction, 0.0 if folds else test_fraction)
    except ValueError as exc:
        raise ConfigError(f"data: {exc}") from None
    return seed, val_fraction, test_fraction, folds, fold


def _cap_and_hold_out(
    table: pd.DataFrame, specs: list[SourceSpec], held_out: str | None, seed: int, dropped: dict
) -> pd.DataFrame:
    """Steps 5 and 6 (module docstring): max_samples on train rows, then held_out's train and val rows."""
    for spec in specs:
        if spec.max_samples is not None:
            table, n = _cap_train(table, spec.name, spec.max_samples, seed)
            dropped[spec.name]["max_samples"] = n
    if held_out is not None:
        gone = (table["dataset"] == held_out) & (table["split"] != "test")
        dropped[held_out]["held_out"] = int(gone.sum())
        table = table[~gone]
    return table


def _source_specs(data_cfg: Mapping | DictConfig, data: dict, name: str) -> list[SourceSpec]:
    sources_cfg = data.get("sources") or {}
    if not sources_cfg:
        raise ConfigError(f"data ({name}): no sources")
    if isinstance(data_cfg, DictConfig) and data_cfg.get("sources") is not None:
        sources_cfg = data_cfg.sources  # keep the nodes (full keys in error messages)
    return [parse_source(str(k), v) for k, v in sources_cfg.items()]


def _held_out(held_out: Any, specs: list[SourceSpec]) -> str | None:
    if held_out is None:
        return None
    names = [s.name for s in specs]
    if str(held_out) not in names:
        raise ConfigError(
            f"data.held_out: '{held_out}' is not a source of this mixture ({', '.join(names)})."
            f"{did_you_mean(str(held_out), names)}"
        )
    if len(specs) < 2:
        raise ConfigError("data.held_out: leaving out the only source leaves nothing to train on")
    return str(held_out)


def _labelled_source(spec: SourceSpec, thresholds: tuple[float, float]) -> tuple[Any, pd.DataFrame, dict]:
    """The source loaded, labelled with its thresholds and cut to keep_classes; the rows that dropped."""
    source, table = _load(spec)
    t1, t2 = spec.thresholds or thresholds
    table = table.assign(label=assign_labels(table["score"].to_numpy(), t1, t2), source_weight=spec.weight)
    dropped = {"keep_classes": 0, "max_samples": 0, "held_out": 0}
    if spec.keep_classes is not None:
        keep = table["label"].isin(spec.keep_classes)
        dropped["keep_classes"] = int((~keep).sum())
        table = table[keep]
        if table.empty:
            log.warning("%s: no rows left after keep_classes %s", spec.name, list(spec.keep_classes))
    return source, table, dropped


def single_source_mixture(
    dataset_cfg: Mapping | DictConfig,
    thresholds_cfg: Mapping | DictConfig,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Mixture:
    """A mixture of one dataset config (conf/dataset/<name>.yaml), e.g. for `iqs data stats dataset=ava`."""
    ds = dict(plain(dataset_cfg))
    name = str(ds.get("name") or ds.get("adapter") or "dataset")
    data = {
        "name": name,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "sources": {name: dataset_cfg if isinstance(dataset_cfg, DictConfig) else ds},
    }
    return build_mixture(data, thresholds_cfg)
