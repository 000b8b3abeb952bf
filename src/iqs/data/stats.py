"""`iqs data stats`: what a mixture holds, per source and overall, before anything is trained on it.

    iqs data stats data=demo thresholds=t5_6
    iqs data stats data=ava_eva format=json > stats.json
    iqs data stats dataset=ava dataset.root=/path/to/AVA dataset.annotations=AVA.txt histogram=plots/
    iqs data stats data=demo probe=true                 # + the dataset-identity probe (feature cache)
    iqs data stats data=demo predictions=<run output>/test_predictions.csv   # + within-source metrics

After the per-source tables comes the shortcut audit (iqs.data.audit): the class x source
composition always; the dataset-identity probe with `probe=true`, on the embeddings a frozen-backbone
run cached for this very table (same data, thresholds and seed: run `iqs train` first), or
`probe=<path to a cache/features/<key>.pt>`; within-source metrics of a run's test predictions.

Every number is computed on the mixture's table, i.e. after keep_classes, splitting, dedup and
max_samples: it describes what a run sees. Standard deviations are sample SDs (ddof=1).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqs.core.scale import CLASS_NAMES
from iqs.data.table import SPLITS, images_fingerprint

log = logging.getLogger(__name__)

ALL = "all"


def _num(x: Any) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


def _describe(values: pd.Series, prefix: str) -> dict[str, float | None]:
    v = values.astype(np.float64)
    return {
        f"{prefix}_mean": _num(v.mean()) if len(v) else None,
        f"{prefix}_sd": _num(v.std(ddof=1)) if len(v) > 1 else None,
        f"{prefix}_min": _num(v.min()) if len(v) else None,
        f"{prefix}_max": _num(v.max()) if len(v) else None,
    }


def _class_counts(df: pd.DataFrame) -> dict[str, int]:
    counts = df["label"].value_counts()
    return {name: int(counts.get(c, 0)) for c, name in enumerate(CLASS_NAMES)}


SUMMARY = ("mean", "sd", "min", "max")  # of raw and common-scale scores, per source


def _split_counts(df: pd.DataFrame) -> dict[str, int]:
    counts = df["split"].value_counts()
    return {s: int(counts.get(s, 0)) for s in SPLITS}


def _block(df: pd.DataFrame, raw: bool) -> dict[str, Any]:
    raw_stats = _describe(df["raw_score"], "raw") if raw else dict.fromkeys(f"raw_{k}" for k in SUMMARY)
    return {
        "n": len(df),
        **raw_stats,
        **_describe(df["score"], "score"),
        "class_counts": _class_counts(df),
        "split_counts": _split_counts(df),
        "split_class_counts": {s: _class_counts(df[df["split"] == s]) for s in SPLITS},
    }


def compute_stats(mix: Any) -> dict[str, dict[str, Any]]:
    """Statistics keyed by source name and "all" (raw-score stats are null there: scales differ)."""
    table, removed = mix.table, mix.removed
    out: dict[str, dict[str, Any]] = {}
    for name in mix.sources:
        df = table[table["dataset"] == name]
        source = mix.sources[name]
        native = getattr(source, "native_range", None)
        out[name] = {
            **_block(df, raw=True),
            "native_range": [float(x) for x in native] if native is not None else None,
            "thresholds": list(mix.source_thresholds[name]),
            "weight": mix.weights.get(name),
            "keep_classes": list(mix.keep_classes[name]) if mix.keep_classes.get(name) else None,
            "removed": int((removed["dataset"] == name).sum()),
            "dropped": dict(mix.dropped.get(name, {})),
            "missing": len(mix.missing.get(name, [])),
        }
    out[ALL] = {
        **_block(table, raw=False),
        "native_range": None,
        "thresholds": list(mix.thresholds),
        "weight": None,
        "keep_classes": None,
        "removed": len(removed),
        "dropped": {
            k: sum(d.get(k, 0) for d in mix.dropped.values())
            for k in ("keep_classes", "max_samples", "held_out")
        },
        "missing": sum(len(v) for v in mix.missing.values()),
        "fingerprint": mix.fingerprint,
        # what the feature cache keys on (images, not labels or splits): `probe=true` looks it up
        "images_fingerprint": images_fingerprint(mix.table),
    }
    return out


def write_histograms(mix: Any, folder: str | Path) -> list[Path]:
    """`<folder>/<source>_scores.png` per source and `<folder>/all_scores.png` (mixture thresholds)."""
    from iqs.data.plots import save_label_histogram

    folder = Path(folder)
    written = []
    for name in mix.sources:
        scores = mix.table.loc[mix.table["dataset"] == name, "score"].to_numpy()
        t1, t2 = mix.source_thresholds[name]
        written.append(
            save_label_histogram(
                folder / f"{name}_scores.png", scores, t1, t2, f"{name}: {len(scores)} images"
            )
        )
    t1, t2 = mix.thresholds
    written.append(
        save_label_histogram(
            folder / f"{ALL}_scores.png",
            mix.table["score"].to_numpy(),
            t1,
            t2,
            f"{mix.name}: {len(mix.table)} images",
        )
    )
    return written


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _count_pct(n: int, total: int) -> str:
    return f"{n} ({100.0 * n / total:.1f}%)" if total else "0"


def render_tables(stats: dict[str, dict[str, Any]], mix: Any, console: Any) -> None:
    console.print(_scores_table(stats, mix))
    console.print(_classes_table(stats, mix))
    console.print(_split_classes_table(stats))
    _print_left_out(mix, console)
    console.print(f"fingerprint {stats[ALL]['fingerprint']}")


def _scores_table(stats: dict[str, dict[str, Any]], mix: Any) -> Any:
    from rich.table import Table

    scores = Table(title=f"Mixture {mix.name}: scores (common scale 1-10; raw = native scale)")
    for col in ("source", "n", "native", *(f"raw {k}" for k in SUMMARY), *SUMMARY):
        scores.add_column(col, justify="left" if col in ("source", "native") else "right")
    for name, s in stats.items():
        native = "-" if s["native_range"] is None else "{:g}-{:g}".format(*s["native_range"])
        scores.add_row(
            name,
            str(s["n"]),
            native,
            *(_fmt(s[f"raw_{k}"]) for k in SUMMARY),
            *(_fmt(s[f"score_{k}"]) for k in SUMMARY),
        )
    return scores


def _classes_table(stats: dict[str, dict[str, Any]], mix: Any) -> Any:
    from rich.table import Table

    t1, t2 = mix.thresholds
    classes = Table(
        title=f"Classes (bad <= t1 < normal <= t2 < good; mixture t1={t1:g}, t2={t2:g}) and splits"
    )
    for col in ("source", "t1, t2", *CLASS_NAMES, *SPLITS, "removed", "dropped", "missing"):
        classes.add_column(col, justify="left" if col == "source" else "right")
    for name, s in stats.items():
        cc, n = s["class_counts"], s["n"]
        dropped = ", ".join(f"{k} {v}" for k, v in s["dropped"].items() if v) or "0"
        classes.add_row(
            name,
            "{:g}, {:g}".format(*s["thresholds"]),
            *(_count_pct(cc[c], n) for c in CLASS_NAMES),
            *(str(s["split_counts"][sp]) for sp in SPLITS),
            str(s["removed"]),
            dropped,
            str(s["missing"]),
        )
    return classes


def _split_classes_table(stats: dict[str, dict[str, Any]]) -> Any:
    from rich.table import Table

    per_split = Table(title="Classes per split")
    for col in ("source", "split", *CLASS_NAMES):
        per_split.add_column(col, justify="left" if col in ("source", "split") else "right")
    for name, s in stats.items():
        for sp in SPLITS:
            cc = s["split_class_counts"][sp]
            total = sum(cc.values())
            per_split.add_row(name, sp, *(_count_pct(cc[c], total) for c in CLASS_NAMES))
    return per_split


def _print_left_out(mix: Any, console: Any) -> None:
    """The rows removed as held out elsewhere and the missing images, a few of each."""
    if len(mix.removed):
        console.print(f"Removed {len(mix.removed)} train/val rows whose image is held out elsewhere, e.g.:")
        for _, row in mix.removed.groupby("dataset", sort=False).head(3).iterrows():
            console.print(
                f"  {row['dataset']} {row['image_id']} ({row['split']}): {row['reason']}", markup=False
            )
    for name, paths in mix.missing.items():
        if paths:
            console.print(f"{name}: {len(paths)} images missing, e.g. {', '.join(paths[:3])}", markup=False)


def audit_report(mix: Any, cfg: Any) -> dict[str, Any]:
    """The shortcut audit that `iqs data stats` shows (see iqs.data.audit)."""
    from iqs.data.audit import cached_embeddings, composition, identity_probe, within_source
    from iqs.data.mixture import ConfigError

    report: dict[str, Any] = {"composition": composition(mix.table)}
    probe = cfg.get("probe")
    if probe not in (None, False, "false"):
        if probe in (True, "true"):
            images = images_fingerprint(mix.table)
            entries = cached_embeddings(str(cfg.paths.cache_dir), images)
            if not entries:
                raise ConfigError(
                    f"probe=true: no feature cache in {cfg.paths.cache_dir}/features for these images "
                    f"(fingerprint {images}). Train a frozen-backbone run on the same data "
                    "first (e.g. `iqs train experiment=demo`), or pass "
                    "probe=<path to a cache/features/<key>.pt>"
                )
            path, key, x = entries[0]
        else:
            import torch

            path = Path(str(probe))
            if not path.is_file():
                raise ConfigError(f"probe={path}: no such feature cache file")
            entry = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            key, x = entry.get("key") or {}, entry["eval"].float().numpy()
            images = images_fingerprint(mix.table)
            if key.get("table_fingerprint") != images or len(x) != len(mix.table):
                raise ConfigError(
                    f"probe={path}: embeds images {key.get('table_fingerprint')} ({len(x)} rows), not "
                    f"these ({images}, {len(mix.table)} rows); use the same data and seed"
                )
        table = mix.table
        report["identity_probe"] = identity_probe(
            x, table["dataset"].to_numpy(), table["group"].to_numpy(), seed=int(cfg.get("seed", 0))
        )
        report["identity_probe"]["features"] = f"{key.get('backbone')} {key.get('pool')}, {path.name}"
    if cfg.get("predictions"):
        import pandas as pd

        report["within_source"] = within_source(pd.read_csv(str(cfg.predictions)))
    return report


def _error(message: str) -> int:
    print(f"iqs data stats: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from iqs.core.config import compose
    from iqs.core.errors import DataError
    from iqs.data.mixture import ConfigError

    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
        )
    try:
        cfg = compose("stats", list(argv or []))
        fmt = str(cfg.format)
        if fmt not in ("table", "json"):
            raise ConfigError(f"format must be 'table' or 'json', got '{fmt}'")
        mix = _mixture(cfg)
        stats = compute_stats(mix)
        audit = audit_report(mix, cfg)
        if cfg.histogram:
            for path in write_histograms(mix, str(cfg.histogram)):
                log.info("wrote %s", path)
    except DataError as exc:
        # adapters' messages name the file and row and say what to do
        return _error(str(exc))
    except FileNotFoundError as exc:
        where = exc.filename or exc
        return _error(
            f"file not found: {where}. Check the dataset's root and annotations "
            "(dataset.root=... / data.sources.<name>.root=..., or set IQS_DATA_DIR) and that the "
            "dataset is downloaded there."
        )
    except ConfigError as exc:
        return _error(f"bad config: {exc}.")
    except (HydraException, OmegaConfBaseException) as exc:
        msg = " ".join(str(exc).split())
        return _error(
            f"cannot compose the config: {msg}. See conf/stats.yaml and conf/data/ for the options."
        )

    from iqs.data.audit import render, to_json

    if fmt == "json":
        stats[ALL]["audit"] = to_json(audit)
        sys.stdout.write(json.dumps(stats, indent=2) + "\n")
    else:
        from rich.console import Console

        console = Console(width=None if sys.stdout.isatty() else 160)
        render_tables(stats, mix, console)
        render(audit, console)
    return 0


def _mixture(cfg: Any) -> Any:
    """`dataset=...`: that one dataset, split by the stats config's fractions; else the configured mixture."""
    from iqs.data.mixture import build_mixture, ensure_data, single_source_mixture

    if cfg.get("dataset") is not None:
        return single_source_mixture(
            cfg.dataset,
            cfg.thresholds,
            seed=int(cfg.seed),
            val_fraction=float(cfg.val_fraction),
            test_fraction=float(cfg.test_fraction),
        )
    ensure_data(cfg.data)
    return build_mixture(cfg.data, cfg.thresholds)
