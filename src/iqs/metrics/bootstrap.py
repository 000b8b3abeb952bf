"""Confidence intervals by cluster bootstrap, paired run-vs-run differences, and Fisher-z intervals.

    ci = cluster_bootstrap_ci("srcc", true_score, pred_score, groups)          # ci.estimate, ci.low, ci.high
    d = paired_bootstrap("macro_f1", true_class, pred_a, pred_b, groups)        # d.delta, d.low, d.high, d.p_value
    cis = bootstrap_metrics(EvalRows.from_predictions(frame, "demo_ava"), ["srcc", "acc"])

**The unit is the group, not the image.** A group (a photograph and every crop or distortion of it;
`group` in the data table) is what the splits keep together, so it is also what a new test set would
sample anew: images of one group are not independent, and resampling images would give intervals that
are too narrow. Each resample draws the test split's groups with replacement (`scipy.stats.bootstrap`
over the group indices); a row then counts as many times as its group was drawn, and every metric is
computed on those weighted rows. The weighted metrics below equal the plain metric of the resampled
rows (tests compare them with scipy/sklearn on `np.repeat`-ed rows); they are written out here because
scipy, sklearn and torchmetrics have no correlation or F1 that takes integer weights for a whole batch
of resamples at once, and looping over 1000 resamples in Python would be slow.

**Interval: percentile, by default.** BCa (scipy's default) needs a jackknife over the groups, one
metric evaluation per group: on a real test set with one group per image (AVA: ~20k) that is 20k extra
evaluations, and with the demo's handful of photographs the acceleration estimate rests on a handful of
leave-one-out values. The percentile interval is cheap, never undefined, respects the [-1, 1] range of
correlations (it is transformation-invariant), and matches the paired p-value below (the interval
excludes 0 exactly when p < 1 - confidence). `method="bca"` is available.

**Paired p-value.** Both runs are scored on the same resampled groups; the two-sided p-value is
2 * min(P*(delta <= 0), P*(delta >= 0)) over the bootstrap distribution of the difference, floored at
1/n_resamples. It is a bootstrap p-value: with few groups it is coarse, and it says nothing about other
test sets drawn from other photographs.

**Fisher z.** For PLCC and SRCC, `fisher_z_ci` gives the closed-form interval for n *independent*
pairs (Bonett & Wright's variance for Spearman); on independent data it agrees with the bootstrap,
on clustered data the cluster bootstrap is wider (tests check both).

EMD has no interval here: the predictions CSV does not keep the true score distributions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from iqs.metrics.grouped import BINARY_THRESHOLD
from iqs.metrics.label_rule import ALL, class_columns

# Metric on weighted rows: (y_true (N,), y_pred (N,), weights (B, N)) -> (B,) values.
WeightedMetric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

METHODS = ("percentile", "bca", "basic")
DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_METHOD = "percentile"
# rows x resamples held in memory per vectorised call (float64: 8 bytes each)
CELLS_PER_BATCH = 4_000_000
# Kendall's tau on dense N x N sign matrices up to this N; a loop over resamples (scipy) beyond it
KENDALL_DENSE_MAX = 2500


# ---------------------------------------------------------------- weighted metrics


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of rows weighted by w (B, N); x, y broadcast to (B, N). NaN when a side is constant."""
    sw = w.sum(axis=-1)
    mx = (w * x).sum(axis=-1) / sw
    my = (w * y).sum(axis=-1) / sw
    dx = x - mx[..., None]
    dy = y - my[..., None]
    vx = (w * dx * dx).sum(axis=-1)
    vy = (w * dy * dy).sum(axis=-1)
    cov = (w * dx * dy).sum(axis=-1)
    # relative test: a constant side leaves only rounding noise in its variance
    scale_x = (w * x * x).sum(axis=-1) + 1e-300
    scale_y = (w * y * y).sum(axis=-1) + 1e-300
    degenerate = (vx <= 1e-12 * scale_x) | (vy <= 1e-12 * scale_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(vx * vy)
    r = np.clip(r, -1.0, 1.0)
    r[degenerate] = np.nan
    return r


def _weighted_midranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, N) average ranks of x in each weighted resample (a row counted w times; ties share their mean rank)."""
    uniq, inv = np.unique(x, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(inv[order])) + 1]
    per_value = np.add.reduceat(w[:, order], starts, axis=1)  # (B, U): copies of each distinct value
    below = np.cumsum(per_value, axis=1) - per_value
    mid = below + (per_value + 1.0) / 2.0
    assert mid.shape[1] == len(uniq)
    return mid[:, inv]


def plcc(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _weighted_pearson(y_true, y_pred, w)


def srcc(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Spearman: Pearson of the midranks within each resample (scipy.stats.spearmanr on the repeated rows)."""
    return _weighted_pearson(_weighted_midranks(y_true, w), _weighted_midranks(y_pred, w), w)


def _tie_pairs(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pairs of copies tied in x per resample: sum over distinct values of T(T-1)/2, T = copies of the value."""
    _, inv = np.unique(x, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(inv[order])) + 1]
    t = np.add.reduceat(w[:, order], starts, axis=1)
    return (t * (t - 1.0) / 2.0).sum(axis=1)


def krcc(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Kendall tau-b of the repeated rows: (C - D) / sqrt((n0 - n1)(n0 - n2)), as scipy.stats.kendalltau."""
    n = y_true.shape[0]
    if n > KENDALL_DENSE_MAX:
        out = np.empty(w.shape[0])
        for b, wb in enumerate(w):
            reps = wb.astype(np.int64)
            out[b] = stats.kendalltau(np.repeat(y_true, reps), np.repeat(y_pred, reps)).statistic
        return out
    s = (np.sign(y_true[:, None] - y_true[None, :]) * np.sign(y_pred[:, None] - y_pred[None, :])).astype(
        np.float64
    )
    c_minus_d = 0.5 * ((w @ s) * w).sum(axis=1)  # w' S w per resample, through BLAS
    total = w.sum(axis=1)
    n0 = total * (total - 1.0) / 2.0
    denom = np.sqrt((n0 - _tie_pairs(y_true, w)) * (n0 - _tie_pairs(y_pred, w)))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(denom > 0, c_minus_d / denom, np.nan)
    return np.clip(tau, -1.0, 1.0)


def rmse(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    d2 = (np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)) ** 2
    return np.sqrt((w * d2).sum(axis=1) / w.sum(axis=1))


def binary_acc_5(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    agree = ((y_true > BINARY_THRESHOLD) == (y_pred > BINARY_THRESHOLD)).astype(np.float64)
    return (w * agree).sum(axis=1) / w.sum(axis=1)


N_CLASSES = 3


def _confusions(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, C, C) weighted confusion matrices, rows = true class (sklearn's layout)."""
    codes = np.asarray(y_true, np.int64) * N_CLASSES + np.asarray(y_pred, np.int64)
    onehot = np.zeros((codes.shape[0], N_CLASSES * N_CLASSES))
    onehot[np.arange(codes.shape[0]), codes] = 1.0
    return (w @ onehot).reshape(-1, N_CLASSES, N_CLASSES)


def _f1_parts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp = np.diagonal(cm, axis1=1, axis2=2)
    fp = cm.sum(axis=1) - tp
    fn = cm.sum(axis=2) - tp
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1.0), 0.0)  # zero_division=0
    return f1, denom > 0


def acc(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    cm = _confusions(y_true, y_pred, w)
    return np.trace(cm, axis1=1, axis2=2) / cm.sum(axis=(1, 2))


def _f1_of_class(c: int) -> WeightedMetric:
    def f1(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
        return _f1_parts(_confusions(y_true, y_pred, w))[0][:, c]

    return f1


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes in the truth or the predictions (sklearn's default labels)."""
    f1, present = _f1_parts(_confusions(y_true, y_pred, w))
    return (f1 * present).sum(axis=1) / present.sum(axis=1)


def balanced_acc(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present in the truth (sklearn.metrics.balanced_accuracy_score)."""
    cm = _confusions(y_true, y_pred, w)
    support = cm.sum(axis=2)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    recall = np.where(support > 0, tp / np.where(support > 0, support, 1.0), 0.0)
    return recall.sum(axis=1) / (support > 0).sum(axis=1)


# metric name -> (which columns it reads: "score" or "class", weighted implementation)
METRICS: dict[str, tuple[str, WeightedMetric]] = {
    "plcc": ("score", plcc),
    "srcc": ("score", srcc),
    "krcc": ("score", krcc),
    "rmse": ("score", rmse),
    "binary_acc_5": ("score", binary_acc_5),
    "acc": ("class", acc),
    "f1_bad": ("class", _f1_of_class(0)),
    "f1_normal": ("class", _f1_of_class(1)),
    "f1_good": ("class", _f1_of_class(2)),
    "macro_f1": ("class", macro_f1),
    "balanced_acc": ("class", balanced_acc),
}
# the metrics whose weighted value is NaN for a degenerate resample (constant truth or prediction)
CORRELATIONS = ("plcc", "srcc", "krcc")


def _metric(metric: str | WeightedMetric) -> WeightedMetric:
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"no bootstrap for metric '{metric}'; known: {', '.join(METRICS)}")
    return METRICS[metric][1]


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


def _group_codes(groups: Sequence | np.ndarray | pd.Series, n: int) -> tuple[np.ndarray, int]:
    values = pd.Series(np.asarray(groups, dtype=object))
    if len(values) != n:
        raise ValueError(f"groups has {len(values)} values for {n} rows")
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise ValueError(f"group of row {row} is missing; every row needs a group (its photograph)")
    codes, uniq = pd.factorize(values.astype(str), sort=True)
    return codes.astype(np.int64), len(uniq)


def _check_settings(n_resamples: int, confidence: float, method: str) -> str:
    method = str(method).lower()
    if method not in METHODS:
        raise ValueError(f"bootstrap method must be one of {', '.join(METHODS)}, got '{method}'")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return method


def _resample_groups(
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


def _nan_ci(estimate: float, n_groups: int, n_resamples: int, method: str, confidence: float) -> BootstrapCI:
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
    method = _check_settings(n_resamples, confidence, method)
    fn = _metric(metric)
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D of one length, got {y_true.shape} and {y_pred.shape}"
        )
    codes, n_groups = _group_codes(groups, len(y_true))
    if len(y_true) == 0:
        return _nan_ci(float("nan"), 0, int(n_resamples), method, confidence)
    if n_groups < 2:
        return _nan_ci(
            float(fn(y_true, y_pred, np.ones((1, len(y_true))))[0]), n_groups, n_resamples, method, confidence
        )
    est, low, high, dist = _resample_groups(
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
    method = _check_settings(n_resamples, confidence, method)
    fn = _metric(metric)
    y_true = np.asarray(y_true, dtype=np.float64)
    y_true_b = y_true if y_true_b is None else np.asarray(y_true_b, dtype=np.float64)
    a = np.asarray(y_pred_a, dtype=np.float64)
    b = np.asarray(y_pred_b, dtype=np.float64)
    if not (y_true.shape == a.shape == b.shape == y_true_b.shape) or y_true.ndim != 1:
        raise ValueError(
            f"paired rows must be 1-D of one length, got {y_true.shape}, {a.shape}, {b.shape}, {y_true_b.shape}"
        )
    codes, n_groups = _group_codes(groups, len(y_true))

    def stat(w: np.ndarray) -> np.ndarray:
        va, vb = fn(y_true, a, w), fn(y_true_b, b, w)
        return np.stack([vb - va, va, vb])

    nan = float("nan")
    if n_groups < 2:
        d, va, vb = stat(np.ones((1, len(y_true))))[:, 0] if len(y_true) else (nan, nan, nan)
        return PairedResult(
            float(va), float(vb), float(d), nan, nan, nan, n_groups, int(n_resamples), method, confidence
        )
    est, low, high, dist = _resample_groups(
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


# ---------------------------------------------------------------- many metrics of a predictions table


@dataclass(frozen=True)
class EvalRows:
    """What the metrics of one dataset (or `all`) are computed on: scores, classes under the label rule, groups."""

    true_score: np.ndarray
    pred_score: np.ndarray
    true_class: np.ndarray
    pred_class: np.ndarray
    groups: np.ndarray
    image_ids: np.ndarray

    @classmethod
    def from_predictions(cls, predictions: pd.DataFrame, dataset: str) -> EvalRows:
        """Rows of `dataset` (or `all`) of a test-predictions table (iqs.tracking.artifacts columns).

        Classes follow the label rule (iqs.metrics.label_rule): a source is scored on its own threshold
        pair, `all` on the run's declared pair. Without a `group` column every image is its own group.
        """
        part = predictions if dataset == ALL else predictions[predictions["dataset"].astype(str) == dataset]
        true_col, pred_col = class_columns(dataset, predictions.columns)
        groups = (
            part["group"]
            if "group" in part.columns
            else part["dataset"].astype(str) + ":" + part["image_id"].astype(str)
        )
        return cls(
            true_score=part["score"].to_numpy(np.float64),
            pred_score=part["pred_score"].to_numpy(np.float64),
            true_class=part[true_col].to_numpy(np.int64),
            pred_class=part[pred_col].to_numpy(np.int64),
            groups=groups.astype(str).to_numpy(),
            image_ids=(part["dataset"].astype(str) + ":" + part["image_id"].astype(str)).to_numpy(),
        )

    def columns_for(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        kind = METRICS[metric][0] if metric in METRICS else "score"
        return (self.true_score, self.pred_score) if kind == "score" else (self.true_class, self.pred_class)


def bootstrap_metrics(
    rows: EvalRows,
    metrics: Sequence[str],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    method: str = DEFAULT_METHOD,
    seed: int = 0,
) -> dict[str, BootstrapCI]:
    """Every metric's estimate and CI from ONE set of resampled groups (so they are mutually consistent)."""
    method = _check_settings(n_resamples, confidence, method)
    names = [m for m in metrics if m in METRICS]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"no bootstrap for metrics {unknown}; known: {', '.join(METRICS)}")
    n = len(rows.true_score)
    codes, n_groups = _group_codes(rows.groups, n)

    def stat(w: np.ndarray) -> np.ndarray:
        return np.stack([METRICS[m][1](*rows.columns_for(m), w) for m in names])

    if n == 0:
        return {m: _nan_ci(float("nan"), 0, int(n_resamples), method, confidence) for m in names}
    if n_groups < 2:
        est = stat(np.ones((1, n)))[:, 0]
        return {
            m: _nan_ci(float(v), n_groups, int(n_resamples), method, confidence)
            for m, v in zip(names, est, strict=True)
        }
    est, low, high, dist = _resample_groups(
        stat, codes, n_groups, n_resamples=n_resamples, confidence=confidence, method=method, seed=seed
    )
    return {
        m: BootstrapCI(
            float(est[i]),
            float(low[i]),
            float(high[i]),
            n_groups,
            int(n_resamples),
            method,
            float(confidence),
            int(np.isnan(dist[i]).sum()),
        )
        for i, m in enumerate(names)
    }


# ---------------------------------------------------------------- closed form


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


def metric_names(metrics: Mapping[str, object] | Sequence[str]) -> list[str]:
    """The names among `metrics` that have a bootstrap (EMD and unknown names dropped)."""
    return [m for m in metrics if m in METRICS]
