"""A short markdown model card: what the model is, what it was trained and judged on, how to rebuild it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from iqs.tracking.mlflow_run import CLASS_NAMES, cfg_get

PICK_LABELS = ("Rejected", "Pending", "Accepted")  # digiKam's pick labels for bad / normal / good
METRIC_KEY = re.compile(r"^test/(?P<dataset>[^/]+)/(?P<metric>.+)$")


def md_table(df: pd.DataFrame) -> str:
    """GitHub markdown table (pandas' to_markdown needs `tabulate`, which the project does not ship)."""

    def cell(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def metrics_by_dataset(metrics: Mapping[str, float]) -> pd.DataFrame:
    """`test/<dataset>/<metric>` keys pivoted to one row per dataset (`all` last)."""
    rows = [(m["dataset"], m["metric"], float(v)) for k, v in metrics.items() if (m := METRIC_KEY.match(k))]
    if not rows:
        return pd.DataFrame()
    long = pd.DataFrame(rows, columns=["dataset", "metric", "value"])
    wide = long.pivot_table(index="dataset", columns="metric", values="value", aggfunc="last")
    order = sorted(wide.index, key=lambda d: (d == "all", d))
    return wide.loc[order].reset_index()


def mixture_table(
    cfg: Mapping[str, Any], counts: pd.DataFrame, source_thresholds: Mapping[str, tuple[float, float]]
) -> pd.DataFrame:
    """One row per source: weight, thresholds, kept classes, rows per split and train rows per class."""
    out = []
    for source in sorted(counts["dataset"].astype(str).unique()):
        part = counts[counts["dataset"].astype(str) == source]
        row: dict[str, Any] = {"source": source}
        scfg = cfg_get(cfg, f"data.sources.{source}", {})
        row["weight"] = cfg_get(scfg, "weight", 1.0)
        t1, t2 = source_thresholds.get(source, (np.nan, np.nan))
        row["thresholds"] = f"{t1:g} / {t2:g}"
        keep = cfg_get(scfg, "keep_classes")
        row["classes kept"] = "all" if keep is None else ", ".join(CLASS_NAMES[int(c)] for c in keep)
        for split in ("train", "val", "test"):
            row[split] = int(part.loc[part["split"] == split, "n"].sum()) if "split" in part else 0
        if "label" in part.columns:
            train = part[part["split"] == "train"]
            for c, name in enumerate(CLASS_NAMES):
                row[f"train {name}"] = int(train.loc[train["label"] == c, "n"].sum())
        out.append(row)
    return pd.DataFrame(out)


def _io_contract(
    cfg: Mapping[str, Any], meta: Mapping[str, Any] | None, thresholds: tuple[float, float]
) -> list[str]:
    meta = dict(meta or {})
    size = meta.get("input_size") or cfg_get(cfg, "backbone.input_size") or cfg_get(cfg, "data.input_size")
    mean = meta.get("mean") or cfg_get(cfg, "backbone.mean")
    std = meta.get("std") or cfg_get(cfg, "backbone.std")
    t1, t2 = meta.get("thresholds") or thresholds
    interpolation = meta.get("interpolation") or cfg_get(cfg, "backbone.interpolation") or "bicubic"
    src = (
        "the checkpoint's `iqs_meta` record"
        if meta
        else "the run config (no `iqs_meta` record was available)"
    )
    return [
        f"Network, as trained (read from {src}):",
        "",
        f"- **Input**: RGB, float32 NCHW, the whole photo resized to {_fmt_size(size)} ({interpolation}, no crop), "
        f"scaled to [0, 1] and normalised with mean {_fmt_list(mean)}, std {_fmt_list(std)}.",
        "- **Output** `probs` (N, 3): softmax over "
        + ", ".join(f"{c} (digiKam {p})" for c, p in zip(CLASS_NAMES, PICK_LABELS, strict=True))
        + "; the argmax is the pick label.",
        f"- **Output** `score` (N,): common scale [1, 10] for score heads (score <= {t1:g} bad, "
        f"<= {t2:g} normal, else good); the expected class index 0..2 for the classification head.",
        "",
        "digiKam's side (`iqs export`): a 1x3x299x299 RGB blob in [-1, 1] in, 1x3 probabilities "
        "bad/normal/good out; the export maps that blob onto the input above inside the graph.",
    ]


def _fmt_size(size: Any) -> str:
    if size is None:
        return "input size as in the export metadata"
    size = list(size) if not isinstance(size, int) else [size, size]
    return f"{size[0]}x{size[1]} (HxW)"


def _fmt_list(values: Any) -> str:
    if values is None:
        return "(see export metadata)"
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def render_model_card(
    *,
    run_name: str,
    run_id: str,
    experiment: str,
    tags: Mapping[str, str],
    cfg: Mapping[str, Any],
    metrics: Mapping[str, float],
    counts: pd.DataFrame,
    thresholds: tuple[float, float],
    source_thresholds: Mapping[str, tuple[float, float]],
    io_meta: Mapping[str, Any] | None,
    command: str,
) -> str:
    head = cfg_get(cfg, "head.name", tags.get("head", "?"))
    backbone = cfg_get(cfg, "backbone.name", tags.get("backbone", "?"))
    weights = cfg_get(cfg, "backbone.weights") or (io_meta or {}).get("weights")
    commit = tags.get("git_commit", "unknown")
    dirty = tags.get("git_dirty") == "true"
    lines = [
        f"# Model card: {run_name}",
        "",
        f"MLflow run `{run_id}` in experiment `{experiment}`, sweep `{tags.get('sweep_id', 'none')}`. "
        f"Commit `{commit}`{' with uncommitted changes (see `git.diff`)' if dirty else ''}; "
        f"data fingerprint `{tags.get('fingerprint', 'unknown')}`.",
        "",
        "## Model",
        "",
        f"- head: **{head}**; backbone: **{backbone}**" + (f" (weights: {weights})" if weights else ""),
        f"- rebalancing: **{cfg_get(cfg, 'rebalance.name', tags.get('rebalance', 'none'))}**",
        f"- thresholds (common scale): **{thresholds[0]:g} / {thresholds[1]:g}** "
        "(score <= t1 bad, t1 < score <= t2 normal, else good)",
        "",
        f"## Data mixture `{cfg_get(cfg, 'data.name', tags.get('data', '?'))}`",
        "",
        md_table(mixture_table(cfg, counts, source_thresholds)),
        "",
        "## Test metrics",
        "",
        "PLCC/SRCC/KRCC are the scipy definitions on raw predictions (no logistic fit); `all` pools every source.",
        "",
    ]
    table = metrics_by_dataset(metrics)
    lines += [md_table(table) if len(table) else "_no test metrics were logged_", ""]
    lines += ["## I/O contract", "", *_io_contract(cfg, io_meta, thresholds), ""]
    lines += [
        "## Reproduce",
        "",
        "```",
        f"git checkout {commit}" + ("  # plus git.diff from this run's artifacts" if dirty else ""),
        command,
        "```",
        "",
    ]
    return "\n".join(lines)
