"""Cluster-bootstrap resampling (over groups), paired run-vs-run differences, and Fisher-z intervals.

The method and its choices (group as the unit, percentile interval, paired p-value) are described in
`iqs.metrics.bootstrap`, the public entry point; the weighted metrics are in `iqs.metrics.weighted`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from iqs.metrics.weighted import WeightedMetric, weighted_metric

METHODS = ("percentile", "bca", "basic")
DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_METHOD = "percentile"
# rows x resamples held in memory per vectorised call (float64: 8 bytes each)
CELLS_PER_BATCH = 4_000_000

# ---------------------------------------------------------------- resampling


@dataclass(frozen=True)
class BootstrapCI:
    estimate: float
    low: float
    high: float
    n_groups: int
    n_resamples: int
    method: str
    confidence: float
    # resamples where the metric was undefined (e.g. constant truth); nonzero -> the interval is NaN
    n_degenerate: int = 0

    def text(self, digits: int = 3, ci_digits: int = 2) -> str:
        """`0.794 [0.75, 0.83]`."""
        if math.isnan(self.estimate):
            return "-"
        if math.isnan(self.low) or math.isnan(self.high):
            return f"{self.estimate:.{digits}f}"
        return f"{self.estimate:.{digits}f} [{self.low:.{ci_digits}f}, {self.high:.{ci_digits}f}]"


@dataclass(frozen=True)
class PairedResult:
    estimate_a: float
    estimate_b: float
    delta: float  # b - a
    low: float
    high: float
    p_value: float
    n_groups: int
    n_resamples: int
    method: str
    confidence: float


def group_codes(groups: Sequence | np.ndarray | pd.Series, n: int) -> tuple[np.ndarray, int]:
    values = pd.Series(np.asarray(groups, dtype=object))
    if len(values) != n:
        raise ValueError(f"groups has {len(values)} values for {n} rows")
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise ValueError(f"group of row {row} is missing; every row needs a group (its photograph)")
    codes, uniq = pd.factorize(values.astype(str), sort=True)
    return codes.astype(np.int64), len(uniq)


def check_settings(n_resamples: int, confidence: float, method: str) -> str:
    method = str(method).lower()
    if method not in METHODS:
        raise ValueError(f"bootstrap method must be one of {', '.join(METHODS)}, got '{method}'")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return method


def resample_groups(
    stat_of_weights: Callable[[np.ndarray], np.ndarray],
    codes: np.ndarray,
    n_groups: int,
    *,
    n_resamples: int,
    confidence: float,
    method: str,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scipy.stats.bootstrap over group indices; returns (estimate, low, high, distribution) per output.

    `stat_of_weights((B, N) row weights) -> (M, B)`; a row's weight is how often its group was drawn.
    """
    n_rows = codes.shape[0]

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.moveaxis(np.asarray(idx), axis, -1)
        flat = idx.reshape(-1, idx.shape[-1])
        offsets = (np.arange(flat.shape[0]) * n_groups)[:, None]
        counts = np.bincount((flat + offsets).ravel(), minlength=flat.shape[0] * n_groups)
        counts = counts.reshape(flat.shape[0], n_groups).astype(np.float64)
        out = stat_of_weights(counts[:, codes])  # (M, batch)
        return out.reshape(out.shape[0], *idx.shape[:-1])

    estimate = stat_of_weights(np.ones((1, n_rows)))[:, 0]
    batch = max(1, min(int(n_resamples), CELLS_PER_BATCH // max(n_rows, 1)))
    with warnings.catch_warnings():
        # a NaN resample (constant data) makes scipy warn about BCa even for the percentile method;
        # the caller reports the degenerate resamples itself
        warnings.filterwarnings("ignore", category=stats.DegenerateDataWarning)
        warnings.filterwarnings("ignore", message=".*invalid value encountered.*")
        res = stats.bootstrap(
            (np.arange(n_groups),),
            statistic,
            n_resamples=int(n_resamples),
            batch=batch,
            vectorized=True,
            confidence_level=float(confidence),
            method=method,
            rng=np.random.default_rng(seed),
        )
    low = np.atleast_1d(np.asarray(res.confidence_interval.low, dtype=np.float64))
    high = np.atleast_1d(np.asarray(res.confidence_interval.high, dtype=np.float64))
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64).reshape(len(estimate), -1)
    return estimate, low, high, dist


def nan_ci(estimate: float, n_groups: int, n_resamples: int, method: str, confidence: float) -> BootstrapCI:
    nan = float("nan")
    return BootstrapCI(float(estimate), nan, nan, n_groups, n_resamples, method, confidence)


def cluster_bootstrap_ci(
    metric: str | WeightedMetric,
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    groups: Sequence | np.ndarray | pd.Series,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    method: str = DEFAULT_METHOD,
    seed: int = 0,
) -> BootstrapCI:
    """Point estimate and cluster-bootstrap CI of one metric (a name in METRICS or a WeightedMetric).

    Scores for score metrics (plcc, srcc, krcc, rmse, binary_acc_5), class indices for class metrics.
    Fewer than 2 groups: the interval is NaN (one photograph says nothing about the next one).
    """
    method = check_settings(n_resamples, confidence, method)
    fn = weighted_metric(metric)
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D of one length, got {y_true.shape} and {y_pred.shape}"
        )
    codes, n_groups = group_codes(groups, len(y_true))
    if len(y_true) == 0:
        return nan_ci(float("nan"), 0, int(n_resamples), method, confidence)
    if n_groups < 2:
        return nan_ci(
            float(fn(y_true, y_pred, np.ones((1, len(y_true))))[0]), n_groups, n_resamples, method, confidence
        )
    est, low, high, dist = resample_groups(
        lambda w: fn(y_true, y_pred, w)[None, :],
        codes,
        n_groups,
        n_resamples=n_resamples,
        confidence=confidence,
        method=method,
        seed=seed,
    )
    degenerate = int(np.isnan(dist[0]).sum())
    return BootstrapCI(
        float(est[0]),
        float(low[0]),
        float(high[0]),
        n_groups,
        int(n_resamples),
        method,
        float(confidence),
        degenerate,
    )


def _p_value(dist: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'delta = 0' from the distribution of delta, at least 1/B."""
    finite = dist[np.isfinite(dist)]
    if finite.size == 0:
        return float("nan")
    below = float(np.mean(finite <= 0.0))
    above = float(np.mean(finite >= 0.0))
    return float(min(1.0, max(2.0 * min(below, above), 1.0 / finite.size)))


def paired_bootstrap(
    metric: str | WeightedMetric,
    y_true: Sequence | np.ndarray,
    y_pred_a: Sequence | np.ndarray,
    y_pred_b: Sequence | np.ndarray,
    groups: Sequence | np.ndarray | pd.Series,
    *,
    y_true_b: Sequence | np.ndarray | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    method: str = DEFAULT_METHOD,
    seed: int = 0,
) -> PairedResult:
    """metric(b) - metric(a) on the same rows, CI and p-value from one set of resampled groups.

    `y_true_b`: run b's truth when it differs from a's (class labels under another threshold pair);
    by default both runs are judged against `y_true`.
    """
    method = check_settings(n_resamples, confidence, method)
    fn = weighted_metric(metric)
    y_true = np.asarray(y_true, dtype=np.float64)
    y_true_b = y_true if y_true_b is None else np.asarray(y_true_b, dtype=np.float64)
    a = np.asarray(y_pred_a, dtype=np.float64)
    b = np.asarray(y_pred_b, dtype=np.float64)
    if not (y_true.shape == a.shape == b.shape == y_true_b.shape) or y_true.ndim != 1:
        raise ValueError(
            f"paired rows must be 1-D of one length, got {y_true.shape}, {a.shape}, {b.shape}, {y_true_b.shape}"
        )
    codes, n_groups = group_codes(groups, len(y_true))

    def stat(w: np.ndarray) -> np.ndarray:
        va, vb = fn(y_true, a, w), fn(y_true_b, b, w)
        return np.stack([vb - va, va, vb])

    nan = float("nan")
    if n_groups < 2:
        d, va, vb = stat(np.ones((1, len(y_true))))[:, 0] if len(y_true) else (nan, nan, nan)
        return PairedResult(
            float(va), float(vb), float(d), nan, nan, nan, n_groups, int(n_resamples), method, confidence
        )
    est, low, high, dist = resample_groups(
        stat, codes, n_groups, n_resamples=n_resamples, confidence=confidence, method=method, seed=seed
    )
    return PairedResult(
        estimate_a=float(est[1]),
        estimate_b=float(est[2]),
        delta=float(est[0]),
        low=float(low[0]),
        high=float(high[0]),
        p_value=_p_value(dist[0]),
        n_groups=n_groups,
        n_resamples=int(n_resamples),
        method=method,
        confidence=float(confidence),
    )


def fisher_z_ci(
    r: float, n: int, kind: str = "pearson", confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """Closed-form CI of a correlation from n independent pairs: tanh(atanh(r) -+ z * se).

    se = 1/sqrt(n-3) for Pearson (what scipy's `pearsonr(...).confidence_interval()` gives); for
    Spearman, Bonett & Wright (2000): sqrt((1 + r^2/2) / (n-3)). scipy has no Spearman interval, hence
    written out. NaN for n < 4 or |r| = 1.
    """
    if kind not in ("pearson", "spearman"):
        raise ValueError(f"kind must be 'pearson' or 'spearman', got '{kind}'")
    if n < 4 or not math.isfinite(r) or abs(r) >= 1.0:
        return float("nan"), float("nan")
    var = 1.0 / (n - 3) if kind == "pearson" else (1.0 + r * r / 2.0) / (n - 3)
    z = stats.norm.ppf(0.5 + confidence / 2.0)
    centre = math.atanh(r)
    half = z * math.sqrt(var)
    return math.tanh(centre - half), math.tanh(centre + half)
