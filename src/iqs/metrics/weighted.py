"""Metrics on weighted rows: one value per bootstrap resample, for a whole batch of resamples at once.

A resample of the test split's groups gives every row a weight (how often its group was drawn); each metric
here equals the plain metric of the rows repeated that often (tests compare them with scipy/sklearn on
`np.repeat`-ed rows). They are written out because scipy, sklearn and torchmetrics have no correlation or
F1 that takes integer weights for a batch of resamples, and looping over 1000 resamples would be slow.
Which metric is which function: iqs.metrics.registry.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from iqs.core.classes import NUM_CLASSES

# Metric on weighted rows: (y_true (N,), y_pred (N,), weights (B, N)) -> (B,) values.
WeightedMetric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
BINARY_THRESHOLD = 5.0  # binary_acc_5: "high quality" is a score > 5 (NIMA's binary accuracy)
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
        from scipy import stats  # here: importing the metrics (iqs compare) needs no scipy.stats

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


def _confusions(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, C, C) weighted confusion matrices, rows = true class (sklearn's layout)."""
    codes = np.asarray(y_true, np.int64) * NUM_CLASSES + np.asarray(y_pred, np.int64)
    onehot = np.zeros((codes.shape[0], NUM_CLASSES * NUM_CLASSES))
    onehot[np.arange(codes.shape[0]), codes] = 1.0
    return (w @ onehot).reshape(-1, NUM_CLASSES, NUM_CLASSES)


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


def f1_of_class(c: int) -> WeightedMetric:
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
