"""Score histograms with the class thresholds drawn, for `iqs data stats` and MLflow artifacts.

Figures are built with `matplotlib.figure.Figure` directly, not pyplot: no global state, no GUI
backend, and the caller can hand the figure to `mlflow.log_figure` or save it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from iqs.core.scale import CLASS_NAMES, COMMON_HI, COMMON_LO, assign_labels

CLASS_COLOURS = ("#d62728", "#7f7f7f", "#2ca02c")  # bad red, normal grey, good green
BIN_WIDTH = 0.1  # thresholds like 5, 5.5 or 4.5 fall on bin edges


def label_histogram(
    scores: np.ndarray,
    t1: float,
    t2: float,
    title: str | None = None,
    bin_width: float = BIN_WIDTH,
) -> Figure:
    """Histogram of common-scale scores, stacked by class, with t1/t2 lines and class counts in the legend."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = assign_labels(scores, t1, t2) if len(scores) else np.zeros(0, dtype=np.int64)
    n = len(scores)
    edges = np.arange(COMMON_LO, COMMON_HI + bin_width / 2, bin_width)

    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    per_class = [scores[labels == c] for c in range(len(CLASS_NAMES))]
    ranges = (f"score <= {t1:g}", f"{t1:g} < score <= {t2:g}", f"score > {t2:g}")
    legend = [
        f"{name} ({rng}): {len(s)} ({100.0 * len(s) / n if n else 0.0:.1f}%)"
        for name, rng, s in zip(CLASS_NAMES, ranges, per_class, strict=True)
    ]
    ax.hist(per_class, bins=edges, stacked=True, color=CLASS_COLOURS, label=legend)
    # t1's label left of its line, t2's right of it, so that close pairs (5, 5.5) stay readable
    for t, name, dx, align in ((t1, "t1", -3, "right"), (t2, "t2", 3, "left")):
        ax.axvline(t, color="black", linestyle="--", linewidth=1.0)
        ax.annotate(
            f"{name} = {t:g}",
            xy=(t, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(dx, -12),
            textcoords="offset points",
            ha=align,
            fontsize=8,
        )
    ax.set_xlim(COMMON_LO, COMMON_HI)
    ax.set_xlabel("score (common scale 1-10)")
    ax.set_ylabel("images")
    ax.set_title(title or f"{n} images")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    return fig


def save_label_histogram(
    path: str | Path, scores: np.ndarray, t1: float, t2: float, title: str | None = None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    label_histogram(scores, t1, t2, title).savefig(path, dpi=110)
    return path
