"""Figures stored with every run: confusion matrices and predicted-vs-true scatter plots.

The label histogram comes from iqs.data.plots (the same figure `iqs data stats` draws).

Figures are built with the object-oriented matplotlib API on the Agg backend, so logging works on a
headless training box and never touches pyplot's global state beyond closing the figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg", force=False)

import numpy as np
from matplotlib.figure import Figure
from scipy import stats
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

from iqs.core.classes import CLASS_NAMES
from iqs.metrics.interval_rule import too_few_text

# beyond this many points a scatter is an unreadable blob: draw a density (hexbin) instead
MAX_SCATTER_POINTS = 20_000


def confusion_from_labels(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray
) -> np.ndarray:
    """3x3 counts, rows = true class, columns = predicted class (sklearn's convention)."""
    return confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(range(len(CLASS_NAMES))))


def row_normalised(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its total (per-class recall on the diagonal); empty rows stay 0."""
    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def confusion_figure(cm: np.ndarray, title: str, class_names: Sequence[str] = CLASS_NAMES) -> Figure:
    """Two panels: counts, and row-normalised rates. `fig.axes[0]` and `[1]` hold the two matrices."""
    cm = np.asarray(cm)
    if cm.shape != (len(class_names), len(class_names)):
        raise ValueError(
            f"confusion matrix for '{title}' has shape {cm.shape}, expected {len(class_names)}x{len(class_names)}"
        )
    fig = Figure(figsize=(10, 4.2))
    ax_counts, ax_rates = fig.subplots(1, 2)
    ConfusionMatrixDisplay(cm.astype(np.int64), display_labels=list(class_names)).plot(
        ax=ax_counts, values_format="d", cmap="Blues", colorbar=False
    )
    ax_counts.set_title(f"counts (n={int(cm.sum())})")
    ConfusionMatrixDisplay(row_normalised(cm), display_labels=list(class_names)).plot(
        ax=ax_rates, values_format=".2f", cmap="Blues", colorbar=False, im_kw={"vmin": 0.0, "vmax": 1.0}
    )
    ax_rates.set_title("row-normalised (recall on the diagonal)")
    fig.suptitle(title)
    return fig


def correlations(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """PLCC and SRCC (scipy, no logistic fit); NaN when undefined (fewer than 2 points or constant)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if len(y_true) < 2 or np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return float("nan"), float("nan")
    return float(stats.pearsonr(y_true, y_pred).statistic), float(stats.spearmanr(y_true, y_pred).statistic)


def scatter_figure(
    true_score: np.ndarray,
    pred_score: np.ndarray,
    thresholds: tuple[float, float],
    title: str,
    *,
    pred_on_common_scale: bool = True,
) -> Figure:
    """Predicted vs true score with the thresholds; identity line when both are on the common scale.

    The classification head's score is an expected class index (0..2), not a common-scale score: then
    there is no identity line and only the true-score thresholds are drawn.
    """
    true_score = np.asarray(true_score, dtype=np.float64)
    pred_score = np.asarray(pred_score, dtype=np.float64)
    plcc, srcc = correlations(true_score, pred_score)
    fig = Figure(figsize=(5.6, 5.2))
    ax = fig.subplots()
    if len(true_score) > MAX_SCATTER_POINTS:
        hb = ax.hexbin(true_score, pred_score, gridsize=60, bins="log", cmap="viridis", mincnt=1)
        fig.colorbar(hb, ax=ax, label="images (log)")
    else:
        ax.scatter(true_score, pred_score, s=6, alpha=0.45, linewidths=0, rasterized=True)
    t1, t2 = thresholds
    for t in (t1, t2):
        ax.axvline(t, color="tab:red", lw=0.9, ls="--")
    if pred_on_common_scale:
        for t in (t1, t2):
            ax.axhline(t, color="tab:red", lw=0.9, ls="--")
        lo = float(np.nanmin([true_score.min(initial=1.0), pred_score.min(initial=1.0), 1.0]))
        hi = float(np.nanmax([true_score.max(initial=10.0), pred_score.max(initial=10.0), 10.0]))
        ax.plot([lo, hi], [lo, hi], color="0.3", lw=1.0, label="identity")
        ax.set_ylabel("predicted score (common scale)")
        ax.legend(loc="upper left", frameon=False)
    else:
        ax.set_ylabel("predicted expected class index (0 bad .. 2 good)")
    ax.set_xlabel(f"true score (common scale); thresholds {t1:g}, {t2:g}")
    ax.set_title(f"{title}: PLCC {plcc:.3f}  SRCC {srcc:.3f}  (n={len(true_score)})")
    return fig


def ci_figure(
    rows: Sequence[str],
    datasets: Sequence[str],
    values: np.ndarray,
    lows: np.ndarray,
    highs: np.ndarray,
    title: str,
    xlabel: str,
    *,
    zero_line: bool = False,
    n_groups: np.ndarray | None = None,
    too_few: np.ndarray | None = None,
) -> Figure:
    """One panel per dataset, one line per run: the value as a dot, its CI as a horizontal bar.

    `values`, `lows`, `highs`: (runs, datasets); NaN bounds draw the dot alone. `fig.axes[j]` is dataset j.
    `n_groups` (same shape): written next to each dot (`n=15`); `too_few`: no bar, `n=3: no CI` beside the
    dot, and the reason (iqs.metrics.interval_rule.too_few_text) under the figure.
    """
    values, lows, highs = (np.asarray(a, dtype=np.float64) for a in (values, lows, highs))
    n_rows, n_ds = len(rows), len(datasets)
    if values.shape != (n_rows, n_ds) or lows.shape != values.shape or highs.shape != values.shape:
        raise ValueError(f"values/lows/highs must be ({n_rows}, {n_ds}), got {values.shape}")
    n_groups = np.full(values.shape, np.nan) if n_groups is None else np.asarray(n_groups, dtype=np.float64)
    too_few = np.zeros(values.shape, bool) if too_few is None else np.asarray(too_few, dtype=bool)
    lows, highs = np.where(too_few, np.nan, lows), np.where(too_few, np.nan, highs)
    fig = Figure(figsize=(2.0 + 2.6 * n_ds, 1.2 + 0.38 * n_rows))
    axes = np.atleast_1d(fig.subplots(1, n_ds, sharey=True, squeeze=False)[0])
    y = np.arange(n_rows)[::-1]
    for j, (ax, ds) in enumerate(zip(axes, datasets, strict=True)):
        v, lo, hi = values[:, j], lows[:, j], highs[:, j]
        has_ci = np.isfinite(lo) & np.isfinite(hi)
        # a percentile interval of a small, lumpy test set may leave the estimate outside it: no negative bar
        err = np.vstack([np.where(has_ci, v - lo, 0.0), np.where(has_ci, hi - v, 0.0)]).clip(min=0.0)
        ax.errorbar(v, y, xerr=err, fmt="o", ms=4, capsize=3, color="tab:blue", ecolor="0.35", lw=1.2)
        for i in np.flatnonzero(np.isfinite(v) & np.isfinite(n_groups[:, j])):
            label = f"n={int(n_groups[i, j])}" + (": no CI" if too_few[i, j] else "")
            right = hi[i] if has_ci[i] else v[i]
            ax.annotate(
                label, (right, y[i]), xytext=(4, 3), textcoords="offset points", fontsize=7, color="0.3"
            )
        if zero_line:
            ax.axvline(0.0, color="tab:red", lw=0.9, ls="--")
        ax.set_title(ds)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel(xlabel)
    axes[0].set_yticks(y, [str(r) for r in rows])
    axes[0].set_ylim(-0.6, n_rows - 0.4)
    fig.suptitle(title)
    reasons = [too_few_text(int(n)) for n in sorted(set(n_groups[too_few & np.isfinite(n_groups)]))]
    if reasons:
        fig.text(0.01, 0.0, "\n".join(reasons), fontsize=8, va="top", ha="left")
    return fig
