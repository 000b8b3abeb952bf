"""The one model card: what the model is, what it was trained and judged on, its files and I/O contract.

`iqs train` logs it as `model_card.md` with every run (data mixture from the run's counts), and
`iqs export` writes it as `MODEL_CARD.md` beside the ONNX files (data from the run's params, plus the file
list). Both call `render_model_card`; sections without inputs say so instead of disappearing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqs.core.classes import CLASS_NAMES
from iqs.core.export_profiles import DEFAULT_PROFILES, PROFILES, release_span
from iqs.core.xmp import PICK_LABEL_NAMES, PICK_LABELS
from iqs.models.checkpoints import has_dist
from iqs.tracking.config_view import cfg_get

METRIC_KEY = re.compile(r"^test/(?P<dataset>[^/]+)/(?P<metric>.+)$")
# MLflow params that describe the training data mixture and labelling, as logged by `iqs train`
_DATA_PARAM = re.compile(r"^(data|thresholds|rebalance)[./]")


def md_table(df: pd.DataFrame) -> str:
    """GitHub markdown table (pandas' to_markdown needs `tabulate`, which the project does not ship)."""

    def cell(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else f"{v:.4g}"
        text = (
            v if isinstance(v, str) else json.dumps(v, default=str) if isinstance(v, list | dict) else str(v)
        )
        return text.replace("|", "\\|").replace("\n", " ")

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
    wide = long.pivot_table(index="dataset", columns="metric", values="value", aggfunc="last", dropna=False)
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


def _kv_table(items: Mapping[str, Any]) -> str:
    if not items:
        return "_Not recorded._"
    return md_table(
        pd.DataFrame({"key": [f"`{k}`" for k in sorted(items)], "value": [items[k] for k in sorted(items)]})
    )


def _fmt(values: Any, sep: str = ", ") -> str:
    if values is None:
        return "?"
    return sep.join(f"{float(v):.4g}" for v in (values if not isinstance(values, int) else [values, values]))


# what a head's `score` means, by its declared `score_scale` (recorded in iqs_meta)
SCORE_NOTES = {
    "common": "the predicted score on the common scale [1, 10]",
    "class_index": "the expected class index sum(p_c * c), 0..2",
    "latent": "an unscaled ranking score: only its order means something",
}


def cuts_note(meta: Mapping[str, Any], names: list[str]) -> list[str]:
    """The decision cuts tuned on validation (iqs.train.decision_cuts) that the exported graphs use."""
    cuts = meta.get("decision_cuts")
    if not cuts:
        return []
    c1, c2 = (float(c) for c in cuts)
    return [
        f"- **Decision cuts tuned on the validation split** replace that mapping in both exported graphs: "
        f"predicted score <= {c1:.6g} is {names[0]}, <= {c2:.6g} {names[1]}, else {names[2]} "
        "(`iqs_meta.decision_cuts`)"
    ]


def profile_notes(meta: Mapping[str, Any], score: str) -> list[str]:
    """A line per export profile, from its record (iqs.core.export_profiles); those not exported by default
    say so."""
    dist = "; `dist` (Nx10, common-scale bins 1..10)" if has_dist(meta) else ""
    lines = []
    for p in PROFILES.values():
        when = "" if p.name in DEFAULT_PROFILES else ", when exported"
        text = p.card.format(
            score=score,
            dist=dist,
            opset=meta.get("onnx_opset", "?"),
            releases=release_span(p.opencv_releases),
        )
        lines.append(f"- **{p.name}** profile (`<name>.{p.suffix}`{when}): {text}")
    return lines


def io_contract(meta: Mapping[str, Any] | None) -> list[str]:
    """digiKam's side of the exported graph, and the backbone's side inside it (read from `iqs_meta`)."""
    meta = dict(meta or {})
    size = meta.get("input_size")
    score = SCORE_NOTES.get(str(meta.get("score_scale", "common")), SCORE_NOTES["common"])
    inner = (
        f"resized bilinearly (no antialias) to the backbone's {_fmt(size, 'x')} and normalised with mean "
        f"[{_fmt(meta.get('mean'))}], std [{_fmt(meta.get('std'))}] inside the graph"
        if meta
        else "resized and normalised inside the graph (no `iqs_meta` record was available for the values)"
    )
    return [
        "Every profile takes digiKam's pixels: the whole photo as RGB, stretched to 299x299 with "
        "`INTER_NEAREST_EXACT` (no crop, aspect ratio not kept), `x / 127.5 - 1` in [-1, 1], NCHW float32, "
        f"input name `input`; {inner}. Evaluation and `iqs predict` prepare photos the same way, and "
        "training sees this view of mildly cropped and mirrored photos (iqs.core.preprocess).",
        "",
        *profile_notes(meta, score),
        "",
        "The full `iqs_meta` record is embedded in each ONNX file's metadata (key `iqs_meta`, JSON); a frozen "
        "graph has no metadata, so this card and the run carry it for the .pb.",
    ]


def render_model_card(
    *,
    title: str,
    source: str,
    meta: Mapping[str, Any] | None,
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
    cfg: Mapping[str, Any] | None = None,
    thresholds: tuple[float, float] | None = None,
    counts: pd.DataFrame | None = None,
    source_thresholds: Mapping[str, tuple[float, float]] | None = None,
    params: Mapping[str, Any] | None = None,
    files: Mapping[str, Path] | None = None,
    command: str | None = None,
) -> str:
    """Markdown card. `source`: where the weights come from (run, checkpoint); `meta`: the `iqs_meta` record;
    `cfg`/`counts`/`source_thresholds`: the run's config and mixture (training); `params`: the run's MLflow
    params (export: their data/thresholds/rebalance keys stand in for the mixture); `files`: exported files."""
    tags, meta_d, params = dict(tags or {}), dict(meta or {}), dict(params or {})
    commit, dirty = tags.get("git_commit"), tags.get("git_dirty") == "true"
    lines = [f"# Model card: {title}", "", f"Source: {source}."]
    if tags:
        lines += [
            f"Sweep `{tags.get('sweep_id', 'none')}`; commit `{commit or 'unknown'}`"
            f"{' with uncommitted changes (see `git.diff`)' if dirty else ''}; "
            f"data fingerprint `{tags.get('fingerprint', 'unknown')}`."
        ]
    lines += _model_lines(cfg, meta_d, tags, params, thresholds)
    lines += [
        "",
        f"## Data mixture `{cfg_get(cfg, 'data.name') or params.get('data.name') or tags.get('data', '?')}`",
        "",
    ]
    if counts is not None and len(counts):
        lines.append(md_table(mixture_table(cfg or {}, counts, source_thresholds or {})))
    else:
        data = {k: v for k, v in params.items() if _DATA_PARAM.match(k)}
        lines.append(_kv_table(data))
    table = metrics_by_dataset(metrics)
    lines += [
        "",
        "## Test metrics (per source dataset)",
        "",
        "PLCC/SRCC/KRCC are the scipy definitions on raw predictions (no logistic fit); `all` pools every source.",
        "",
        md_table(table) if len(table) else "_No test metrics were recorded for this model._",
        "",
    ]
    lines += _closing_lines(files, meta_d, command, commit, dirty)
    return "\n".join(lines)


def _model_lines(
    cfg: Mapping[str, Any] | None,
    meta_d: dict[str, Any],
    tags: dict[str, str],
    params: dict[str, Any],
    thresholds: tuple[float, float] | None,
) -> list[str]:
    """The card's `## Model` section: head, backbone, rebalancing, thresholds, cuts, pick labels."""
    head = cfg_get(cfg, "head.name") or meta_d.get("head") or tags.get("head", "?")
    backbone = cfg_get(cfg, "backbone.name") or meta_d.get("backbone") or tags.get("backbone", "?")
    weights = cfg_get(cfg, "backbone.weights") or meta_d.get("weights")
    rebalance = cfg_get(cfg, "rebalance.name") or params.get("rebalance.name") or tags.get("rebalance")
    if thresholds is None and meta_d.get("thresholds"):
        thresholds = (float(meta_d["thresholds"][0]), float(meta_d["thresholds"][1]))
    t1, t2 = thresholds if thresholds is not None else (float("nan"), float("nan"))
    names = list(meta_d.get("class_names") or CLASS_NAMES)
    return [
        "",
        "## Model",
        "",
        f"- head: **{head}**; backbone: **{backbone}**" + (f" (weights: {weights})" if weights else ""),
        f"- rebalancing: **{rebalance or 'not recorded'}**",
        f"- thresholds (common scale [1, 10]): **{t1:g} / {t2:g}**: score <= {t1:g} is {names[0]}, "
        f"<= {t2:g} is {names[1]}, else {names[2]}; the classification and ordinal heads predict the class "
        "directly",
        *cuts_note(meta_d, names),
        "- classes -> digiKam pick labels: "
        + ", ".join(f"{i} {names[i]} -> {PICK_LABEL_NAMES[PICK_LABELS[i]]}" for i in range(3)),
    ]


def _closing_lines(
    files: Mapping[str, Path] | None, meta_d: dict[str, Any], command: str | None, commit: Any, dirty: bool
) -> list[str]:
    """Files, the input/output contract, how to reproduce, and the raw `iqs_meta` record."""
    lines: list[str] = []
    if files:
        lines += ["## Files", "", *(f"- `{p.name}` ({kind})" for kind, p in files.items()), ""]
    lines += ["## Input / output contract", "", *io_contract(meta_d), ""]
    if command:
        lines += [
            "## Reproduce",
            "",
            "```",
            f"git checkout {commit or '<commit>'}"
            + ("  # plus git.diff from this run's artifacts" if dirty else ""),
            command,
            "```",
            "",
        ]
    if meta_d:
        lines += ["## Model metadata (`iqs_meta`)", "", _kv_table(meta_d), ""]
    return lines
