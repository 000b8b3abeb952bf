"""Shortcut audit: can a mixture's classes, or a model's predictions, be explained by the source dataset?

A mixture whose "bad" images come mostly from one dataset (conf/data/seed_combined.yaml does this on
purpose) lets a model learn "bad = looks like KonIQ" instead of "bad = damaged". Three views:

- `composition`: the share of each class that each source supplies (on the train split, what a model
  learns from), with Cramér's V of the class x source table (scipy). It warns when one source supplies
  most of a class and is over-represented there, or when a source holds a single class.
- `identity_probe`: a logistic regression on the frozen embeddings that predicts the source, scored by
  balanced accuracy out of fold (GroupKFold over the split groups, so no photograph is on both sides).
  Near chance: the features barely tell the sources apart, so a head cannot lean on identity.
- `within_source`: per source, the model's classes against that source's own labels (balanced
  accuracy) and how well its score separates bad from good images *inside* the source (ROC AUC),
  next to the pooled AUC and the AUC of a predictor that knows only the source ("source only"). A
  pooled AUC near the source-only one with within-source AUCs near 0.5 means the model only tells
  the datasets apart.

`iqs data stats` shows the first two (the probe with `probe=true`, from the feature cache of a run on
the same table) and the third for a run's `test_predictions.csv` (`predictions=...`); every training
run logs all three (`log_run_audit`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqs.core.scale import CLASS_NAMES

log = logging.getLogger(__name__)

# "most of a class": more than half of it...
DOMINANT_SHARE = 0.5
# ...and at least this many times the source's share of all rows: a source that is 90% of the mixture
# supplies 90% of every class without telling anything about the classes
DOMINANT_LIFT = 1.2
# the probe fits on at most this many rows (seeded subsample): enough for a linear probe on any dataset
PROBE_MAX_ROWS = 20_000
PROBE_FOLDS = 5


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


# ----------------------------------------------------------------------------- class x source composition


def composition(table: pd.DataFrame, split: str | None = "train") -> dict[str, Any]:
    """Share of each class per source, Cramér's V and warnings, on the rows of `split` (None = all)."""
    from scipy.stats.contingency import association

    df = table if split is None else table[table["split"] == split]
    counts = pd.crosstab(df["dataset"], df["label"]).reindex(columns=range(len(CLASS_NAMES)), fill_value=0)
    sources = [str(s) for s in counts.index]
    totals = counts.sum(axis=0)
    source_share = counts.sum(axis=1) / max(int(counts.to_numpy().sum()), 1)
    share = {
        name: {s: _none_if_nan(counts.loc[s, c] / totals[c]) if totals[c] else None for s in sources}
        for c, name in enumerate(CLASS_NAMES)
    }
    # Cramér's V needs two sources and two classes with rows; drop empty classes first
    present = counts.loc[:, totals > 0]
    cramers_v = (
        float(association(present.to_numpy(), method="cramer"))
        if present.shape[0] >= 2 and present.shape[1] >= 2
        else None
    )
    warnings: list[str] = []
    if len(sources) >= 2:
        for name in CLASS_NAMES:
            for s in sources:
                sh = share[name][s]
                if sh is not None and sh > DOMINANT_SHARE and sh >= DOMINANT_LIFT * source_share[s]:
                    warnings.append(
                        f"{s} supplies {100 * sh:.0f}% of the {name} class (and {100 * source_share[s]:.0f}% "
                        f"of all rows): '{name}' may partly mean 'looks like {s}'"
                    )
        for s in sources:
            held = [CLASS_NAMES[c] for c in range(len(CLASS_NAMES)) if counts.loc[s, c] > 0]
            if len(held) == 1:
                warnings.append(
                    f"every {s} row is {held[0]} (keep_classes?): the source alone predicts the label"
                )
    return {
        "split": split or "all",
        "counts": {s: {CLASS_NAMES[c]: int(counts.loc[s, c]) for c in counts.columns} for s in sources},
        "share_of_class": share,
        "source_share": {s: float(source_share[s]) for s in sources},
        "cramers_v": cramers_v,
        "warnings": warnings,
    }


# ----------------------------------------------------------------------------- dataset-identity probe


def identity_probe(
    features: np.ndarray,
    sources: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int = 0,
    max_rows: int = PROBE_MAX_ROWS,
    folds: int = PROBE_FOLDS,
) -> dict[str, Any]:
    """Out-of-fold balanced accuracy of a linear classifier predicting the source from the embeddings.

    Chance for balanced accuracy is 1 / number of sources whatever their sizes. Folds are grouped by
    the split groups (photographs), so a distortion of a held-out photograph never helps its twin in
    another source.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, recall_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(sources).astype(str)
    g = np.asarray(groups).astype(str)
    if not len(x) == len(y) == len(g):
        raise ValueError(f"identity probe: {len(x)} embeddings, {len(y)} sources, {len(g)} groups")
    labels = sorted(set(y))
    n_groups = len(set(g))
    if len(labels) < 2 or n_groups < 2:
        return {"skipped": f"needs two sources and two groups, got {len(labels)} and {n_groups}"}
    rows = np.arange(len(x))
    if len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
    x, y, g = x[rows], y[rows], g[rows]
    # standardised: multi-level pooled features differ in scale by orders of magnitude
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = GroupKFold(n_splits=min(folds, len(set(g))))
    pred = cross_val_predict(model, x, y, groups=g, cv=cv)
    recall = recall_score(y, pred, labels=labels, average=None, zero_division=0)
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "chance": 1.0 / len(labels),
        "recall": {s: float(r) for s, r in zip(labels, recall, strict=True)},
        "rows": len(y),
        "groups": len(set(g)),
        "folds": cv.get_n_splits(),
        "predictions": pd.DataFrame({"row": rows, "source": y, "predicted": pred, "group": g}),
    }


def cached_embeddings(cache_dir: str | Path, table_fingerprint: str) -> list[tuple[Path, dict, np.ndarray]]:
    """Feature-cache entries (iqs.train.features: `<cache_dir>/features/<key>.pt`) of the images whose
    `iqs.data.table.images_fingerprint` is `table_fingerprint`, as (path, key record, (N, D)
    embeddings), newest first."""
    import torch

    folder = Path(cache_dir) / "features"
    found = []
    for path in sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            # mmap: only the key is read unless the entry matches
            entry = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # a foreign or broken file in the cache folder is not ours to judge
            log.warning("skipping unreadable feature cache entry %s (%s)", path, err)
            continue
        key = entry.get("key") or {}
        if key.get("table_fingerprint") == table_fingerprint:
            found.append((path, key, entry["eval"].float().numpy()))
    return found


# ----------------------------------------------------------------------------- within-source metrics


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else None


def within_source(predictions: pd.DataFrame) -> dict[str, Any]:
    """Per source and pooled: balanced accuracy of the predicted classes against the source's labels,
    and the ROC AUC of the predicted score for good vs bad images (normal ones left out)."""
    from sklearn.metrics import balanced_accuracy_score

    need = {"dataset", "label", "pred_class", "pred_score"}
    if missing := need - set(predictions.columns):
        raise ValueError(
            f"predictions lack column(s) {sorted(missing)}; a run's test_predictions.csv has them"
        )
    df = predictions
    out: dict[str, Any] = {"sources": {}}
    for s, part in df.groupby("dataset", sort=False):
        ends = part[part["label"] != 1]
        out["sources"][str(s)] = {
            "n": len(part),
            "classes": int(part["label"].nunique()),
            "balanced_accuracy": float(balanced_accuracy_score(part["label"], part["pred_class"])),
            "good_vs_bad_auc": _auc((ends["label"] == 2).to_numpy(), ends["pred_score"].to_numpy()),
            "n_good_bad": len(ends),
        }
    ends = df[df["label"] != 1]
    good = (ends["label"] == 2).to_numpy()
    # the best a predictor that knows only the source can do: each image scored by its source's
    # share of good images among its good and bad ones
    source_rate = ends.groupby("dataset")["label"].transform(lambda s: (s == 2).mean()).to_numpy()
    out["pooled"] = {
        "good_vs_bad_auc": _auc(good, ends["pred_score"].to_numpy()),
        "source_only_auc": _auc(good, source_rate),
        "balanced_accuracy": float(balanced_accuracy_score(df["label"], df["pred_class"])),
    }
    return out


# ----------------------------------------------------------------------------- reports


def audit_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Flat `audit/...` metrics for MLflow; undefined values (a one-class source's AUC) are left out."""
    m: dict[str, float | None] = {}
    comp = report.get("composition")
    if comp:
        m["audit/composition/cramers_v"] = comp["cramers_v"]
        m["audit/composition/warnings"] = len(comp["warnings"])
        for cls, per in comp["share_of_class"].items():
            for s, v in per.items():
                m[f"audit/composition/{s}/share_of_{cls}"] = v
    probe = report.get("identity_probe") or {}
    if "balanced_accuracy" in probe:
        m["audit/identity/balanced_accuracy"] = probe["balanced_accuracy"]
        m["audit/identity/chance"] = probe["chance"]
        for s, r in probe["recall"].items():
            m[f"audit/identity/{s}/recall"] = r
    within = report.get("within_source")
    if within:
        for s, v in within["sources"].items():
            m[f"audit/within/{s}/balanced_accuracy"] = v["balanced_accuracy"]
            m[f"audit/within/{s}/good_vs_bad_auc"] = v["good_vs_bad_auc"]
        for k, v in within["pooled"].items():
            m[f"audit/pooled/{k}"] = v
    return {k: float(v) for k, v in m.items() if v is not None}


def to_json(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its per-row frames (what `format=json` prints and a run stores)."""
    out = dict(report)
    if isinstance(out.get("identity_probe"), dict):
        out["identity_probe"] = {k: v for k, v in out["identity_probe"].items() if k != "predictions"}
    return out


def render(report: dict[str, Any], console: Any) -> None:
    """Narrow rich tables: class shares per source, the probe, within-source metrics; warnings in red."""
    from rich.table import Table

    comp = report.get("composition")
    if comp:
        v = comp["cramers_v"]
        t = Table(
            title=f"Shortcut audit: share of each class by source ({comp['split']} split), "
            f"Cramér's V {'-' if v is None else f'{v:.2f}'}"
        )
        t.add_column("source")
        for col in (*CLASS_NAMES, "all rows"):
            t.add_column(col, justify="right")
        for s in comp["source_share"]:
            cells = [comp["share_of_class"][c][s] for c in CLASS_NAMES]
            t.add_row(
                s,
                *("-" if x is None else f"{100 * x:.0f}%" for x in cells),
                f"{100 * comp['source_share'][s]:.0f}%",
            )
        console.print(t)
        for w in comp["warnings"]:
            console.print(f"[red]warning:[/red] {w}", highlight=False)
    probe = report.get("identity_probe")
    if probe:
        if "balanced_accuracy" in probe:
            recall = ", ".join(f"{s} {r:.2f}" for s, r in probe["recall"].items())
            console.print(
                f"Dataset-identity probe ({probe.get('features', 'embeddings')}): balanced accuracy "
                f"{probe['balanced_accuracy']:.3f} vs chance {probe['chance']:.3f}, {probe['folds']}-fold "
                f"over {probe['groups']} groups, {probe['rows']} rows; recall {recall}",
                highlight=False,
            )
        else:
            console.print(f"Dataset-identity probe: {probe.get('skipped')}", highlight=False)
    within = report.get("within_source")
    if within:
        t = Table(title="Within-source: predicted classes vs the source's own labels")
        for col in ("source", "n", "bal. acc", "good/bad AUC"):
            t.add_column(col, justify="left" if col == "source" else "right")
        for s, v in within["sources"].items():
            auc = v["good_vs_bad_auc"]
            t.add_row(s, str(v["n"]), f"{v['balanced_accuracy']:.3f}", "-" if auc is None else f"{auc:.3f}")
        p = within["pooled"]
        auc, so = p["good_vs_bad_auc"], p["source_only_auc"]
        t.add_row(
            "pooled", "", f"{p['balanced_accuracy']:.3f}", "-" if auc is None else f"{auc:.3f}", style="bold"
        )
        t.add_row("source only", "", "", "-" if so is None else f"{so:.3f}", style="dim")
        console.print(t)


def log_run_audit(run: Any, datamodule: Any, predictions: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """The audit of a finished run: metrics `audit/...` and the artifact `audit/audit.json`.

    The probe runs on the embeddings the run trained on (the feature cache); runs without one (a
    fine-tuned backbone) log why it was skipped.
    """
    table = datamodule.table
    report: dict[str, Any] = {"composition": composition(table)}
    features = getattr(datamodule, "features", None)
    if features is not None:
        report["identity_probe"] = identity_probe(
            features.eval.numpy(), table["dataset"].to_numpy(), table["group"].to_numpy(), seed=seed
        )
        report["identity_probe"]["features"] = str(features.path.name)
    else:
        report["identity_probe"] = {"skipped": "no frozen-backbone feature cache in this run"}
    if len(predictions):
        report["within_source"] = within_source(predictions)
    for w in report["composition"]["warnings"]:
        log.warning("shortcut audit: %s", w)
    probe = report["identity_probe"]
    if "balanced_accuracy" in probe:
        log.info(
            "shortcut audit: identity probe balanced accuracy %.3f (chance %.3f)",
            probe["balanced_accuracy"],
            probe["chance"],
        )
    run.log_metrics(audit_metrics(report))
    run.log_text(json.dumps(to_json(report), indent=2, default=str), "audit/audit.json")
    return report
