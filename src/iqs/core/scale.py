"""The common score scale [1, 10], 10-bin distributions and threshold classes (README, "Labels and splits")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

from iqs.core.classes import CLASS_NAMES  # noqa: F401  (re-exported: the label rule's classes)

COMMON_LO, COMMON_HI = 1.0, 10.0
N_BINS = 10
BIN_CENTRES = np.arange(1, N_BINS + 1, dtype=np.float64)  # common-scale value of bin i is i+1


def to_common(raw: np.ndarray | float, lo: float, hi: float) -> np.ndarray:
    """Linear map of a native range [lo, hi] onto [1, 10]; AVA's 1-10 maps onto itself."""
    if not hi > lo:
        raise ValueError(f"native range must have hi > lo, got [{lo}, {hi}]")
    raw = np.asarray(raw, dtype=np.float64)
    return COMMON_LO + (raw - lo) * (COMMON_HI - COMMON_LO) / (hi - lo)


def std_to_common(std: np.ndarray | float, lo: float, hi: float) -> np.ndarray:
    return np.asarray(std, dtype=np.float64) * (COMMON_HI - COMMON_LO) / (hi - lo)


def level_weights(levels: Sequence[float], lo: float, hi: float) -> np.ndarray:
    """(L, 10) matrix spreading each native vote level linearly between its two nearest common bins."""
    pos = to_common(np.asarray(levels, dtype=np.float64), lo, hi) - COMMON_LO  # 0..9
    left = np.clip(np.floor(pos).astype(int), 0, N_BINS - 1)
    right = np.clip(left + 1, 0, N_BINS - 1)
    frac = np.clip(pos - left, 0.0, 1.0)
    w = np.zeros((len(pos), N_BINS))
    rows = np.arange(len(pos))
    np.add.at(w, (rows, left), 1.0 - frac)
    np.add.at(w, (rows, right), frac)
    return w


def votes_to_dist(counts: np.ndarray, levels: Sequence[float], lo: float, hi: float) -> np.ndarray:
    """Vote counts (N, L) over native levels -> (N, 10) probabilities on the common bins."""
    counts = np.asarray(counts, dtype=np.float64)
    mass = counts @ level_weights(levels, lo, hi)
    total = mass.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, mass / total, 1.0 / N_BINS)


def gaussian_dist(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Discretised Gaussian over bins 1..10 (bin edges at half-integers, tails folded into the end bins)."""
    mean = np.asarray(mean, dtype=np.float64)[:, None]
    std = np.maximum(np.asarray(std, dtype=np.float64), 0.05)[:, None]
    edges = np.concatenate([[-np.inf], np.arange(1.5, N_BINS, 1.0), [np.inf]])
    cdf = norm.cdf((edges[None, :] - mean) / std)
    p = np.diff(cdf, axis=1)
    return p / p.sum(axis=1, keepdims=True)


def assign_labels(score: np.ndarray | float, t1: float, t2: float) -> np.ndarray:
    """`score <= t1` is bad (0), `t1 < score <= t2` is normal (1), the rest is good (2).

    Every finite score gets exactly one label (the old scripts let AVA scores in (5, 6) fall through).
    """
    if not t1 < t2:
        raise ValueError(f"thresholds must satisfy t1 < t2, got ({t1}, {t2})")
    score = np.asarray(score, dtype=np.float64)
    if np.isnan(score).any():
        raise ValueError("cannot label a NaN score")
    return np.where(score <= t1, 0, np.where(score <= t2, 1, 2)).astype(np.int64)
