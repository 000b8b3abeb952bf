"""Intervals over groups (scipy's cluster bootstrap, the jackknife-t), paired differences, Fisher-z intervals.

The choices (group as the unit, which interval, paired p-value) are described in `iqs.metrics.bootstrap`,
the public entry point, and `iqs.metrics.interval_rule`; the metrics are iqs.metrics.registry's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special as sp_special
from scipy import stats

from iqs.metrics.interval_rule import interval_method, range_of, scale_of, too_few_text
from iqs.metrics.registry import weighted_metric
from iqs.metrics.weighted import WeightedMetric

# `auto`: the method iqs.metrics.interval_rule picks for the metric and the number of groups
BOOTSTRAP_METHODS = ("percentile", "bca", "basic")
METHODS = ("auto", *BOOTSTRAP_METHODS, "jackknife")
DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_METHOD = "auto"
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
    # fewer groups than iqs.metrics.interval_rule trusts any method with: no interval (low/high NaN)
    too_few_groups: bool = False

    def text(self, digits: int = 3, ci_digits: int = 2) -> str:
        """`0.794 [0.75, 0.83]`, or `0.688 (n=3 groups: too few for an interval; ...)`."""
        if math.isnan(self.estimate):
            return "-"
        if self.too_few_groups:
            return f"{self.estimate:.{digits}f} ({too_few_text(self.n_groups)})"
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
    too_few_groups: bool = False


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


@dataclass(frozen=True)
class Intervals:
    """Every output's estimate and its bounds under each requested method (arrays of length M)."""

    estimate: np.ndarray
    bounds: dict[str, tuple[np.ndarray, np.ndarray]]  # method -> (low, high)
    distribution: np.ndarray | None  # (M, B) bootstrap values, None when no bootstrap method was asked
    loo: np.ndarray | None  # (M, G) leave-one-group-out values, None without `jackknife`


# the jackknife's scales: (to the scale, back); iqs.metrics.interval_rule says which metric uses which
_CLIP = 1.0 - 1e-12
SCALES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "identity": (lambda v: v, lambda v: v),
    "fisher_z": (lambda v: np.arctanh(np.clip(v, -_CLIP, _CLIP)), np.tanh),
    "log": (lambda v: np.log(np.maximum(v, 1e-300)), np.exp),
    "logit": (lambda v: sp_special.logit(np.clip(v, 1e-6, 1.0 - 1e-6)), sp_special.expit),
}


def _counts(idx: np.ndarray, n_groups: int) -> np.ndarray:
    """(batch, G) how often each group is drawn, from (batch, G) drawn group indices."""
    offsets = (np.arange(idx.shape[0]) * n_groups)[:, None]
    counts = np.bincount((idx + offsets).ravel(), minlength=idx.shape[0] * n_groups)
    return counts.reshape(idx.shape[0], n_groups).astype(np.float64)


def _bootstrap(
    stat_of_weights: Callable[[np.ndarray], np.ndarray],
    codes: np.ndarray,
    n_groups: int,
    methods: Sequence[str],
    *,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """scipy.stats.bootstrap over group indices: bounds per method from ONE bootstrap distribution."""

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.moveaxis(np.asarray(idx), axis, -1)
        flat = idx.reshape(-1, idx.shape[-1])
        out = stat_of_weights(_counts(flat, n_groups)[:, codes])  # (M, batch)
        return out.reshape(out.shape[0], *idx.shape[:-1])

    batch = max(1, min(int(n_resamples), CELLS_PER_BATCH // max(codes.shape[0], 1)))
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    res = None
    with warnings.catch_warnings():
        # a NaN resample (constant data) makes scipy warn about BCa even for the percentile method;
        # the caller reports the degenerate resamples itself
        warnings.filterwarnings("ignore", category=stats.DegenerateDataWarning)
        warnings.filterwarnings("ignore", message=".*invalid value encountered.*")
        for method in methods:
            # the first method draws the resamples; the others reuse them (n_resamples=0)
            res = stats.bootstrap(
                (np.arange(n_groups),),
                statistic,
                n_resamples=int(n_resamples) if res is None else 0,
                bootstrap_result=res,
                batch=batch,
                vectorized=True,
                confidence_level=float(confidence),
                method=method,
                rng=np.random.default_rng(seed),
            )
            ci = res.confidence_interval
            bounds[method] = (
                np.atleast_1d(np.asarray(ci.low, dtype=np.float64)),
                np.atleast_1d(np.asarray(ci.high, dtype=np.float64)),
            )
    assert res is not None
    return bounds, np.asarray(res.bootstrap_distribution, dtype=np.float64).reshape(
        len(bounds[methods[0]][0]), -1
    )


def jackknife_values(
    stat_of_weights: Callable[[np.ndarray], np.ndarray], codes: np.ndarray, n_groups: int
) -> np.ndarray:
    """(M, G) the outputs with each group left out in turn (its rows weighted 0), in batches.

    Written out because scipy has no public jackknife (BCa's is internal) and the weighted metrics
    evaluate a batch of leave-one-group-out sets at once.
    """
    batch = max(1, CELLS_PER_BATCH // max(codes.shape[0], 1))
    parts = []
    for start in range(0, n_groups, batch):
        left_out = np.arange(start, min(start + batch, n_groups))
        parts.append(stat_of_weights((codes[None, :] != left_out[:, None]).astype(np.float64)))
    return np.concatenate(parts, axis=1)


def jackknife_t(
    estimate: np.ndarray, loo: np.ndarray, scales: Sequence[str], confidence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, se): estimate +- t(G-1) * jackknife SE on each output's scale, mapped back.

    SE^2 = (G-1)/G * sum_g (v_(-g) - mean)^2 over the G leave-one-group-out values (Efron & Tibshirani
    ch. 11); a t quantile with G-1 degrees of freedom, as for a mean over G clusters.
    """
    n_groups = loo.shape[1]
    low, high, se = (np.full(len(estimate), np.nan) for _ in range(3))
    q = stats.t.ppf(0.5 + confidence / 2.0, n_groups - 1)
    for i, scale in enumerate(scales):
        fwd, back = SCALES[scale]
        with np.errstate(all="ignore"):
            vals = fwd(loo[i])
            centre = fwd(np.asarray(estimate[i]))
        if not (np.all(np.isfinite(vals)) and np.isfinite(centre)):
            continue  # a left-out set where the metric is undefined: no interval
        se[i] = math.sqrt((n_groups - 1) / n_groups * float(((vals - vals.mean()) ** 2).sum()))
        low[i], high[i] = back(centre - q * se[i]), back(centre + q * se[i])
    return low, high, se


def group_intervals(
    stat_of_weights: Callable[[np.ndarray], np.ndarray],
    codes: np.ndarray,
    n_groups: int,
    methods: Sequence[str],
    *,
    scales: Sequence[str],
    n_resamples: int,
    confidence: float,
    seed: int,
) -> Intervals:
    """Each output's bounds under each of `methods`, resampling or leaving out whole groups.

    `stat_of_weights((B, N) row weights) -> (M, B)`; a row's weight is how often its group was drawn
    (bootstrap) or 0/1 (jackknife). `scales`: one jackknife scale per output (SCALES).
    """
    estimate = stat_of_weights(np.ones((1, codes.shape[0])))[:, 0]
    boot = [m for m in dict.fromkeys(methods) if m in BOOTSTRAP_METHODS]
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    dist = loo = None
    if boot:
        got, dist = _bootstrap(
            stat_of_weights, codes, n_groups, boot, n_resamples=n_resamples, confidence=confidence, seed=seed
        )
        bounds.update(got)
    if "jackknife" in methods:
        loo = jackknife_values(stat_of_weights, codes, n_groups)
        low, high, _ = jackknife_t(estimate, loo, scales, confidence)
        bounds["jackknife"] = (low, high)
    return Intervals(estimate, bounds, dist, loo)


def methods_for(metrics: Sequence[str], n_groups: int, method: str) -> dict[str, str | None]:
    """Each metric's method: the rule's (`auto`) or the one asked for; None below the rule's minimum."""
    out: dict[str, str | None] = {}
    for m in metrics:
        chosen = interval_method(m, n_groups)
        out[m] = chosen if chosen is None or method == "auto" else method
    return out


def nan_ci(
    estimate: float, n_groups: int, n_resamples: int, method: str, confidence: float, too_few: bool = False
) -> BootstrapCI:
    nan = float("nan")
    return BootstrapCI(float(estimate), nan, nan, n_groups, n_resamples, method, confidence, 0, too_few)


def metric_intervals(
    names: Sequence[str],
    stat_of_weights: Callable[[np.ndarray], np.ndarray],
    codes: np.ndarray,
    n_groups: int,
    *,
    n_resamples: int,
    confidence: float,
    method: str,
    seed: int,
) -> dict[str, BootstrapCI]:
    """Each named output's estimate and interval, the method per metric from the rule (or `method`)."""
    n = codes.shape[0]
    if n == 0:
        return {m: nan_ci(float("nan"), 0, int(n_resamples), method, confidence) for m in names}
    chosen = methods_for(names, n_groups, method)
    wanted = [c for c in chosen.values() if c is not None]
    if n_groups < 2 or not wanted:
        est = stat_of_weights(np.ones((1, n)))[:, 0]
        return {
            m: nan_ci(
                float(v), n_groups, int(n_resamples), chosen[m] or method, confidence, chosen[m] is None
            )
            for m, v in zip(names, est, strict=True)
        }
    got = group_intervals(
        stat_of_weights,
        codes,
        n_groups,
        wanted,
        scales=[scale_of(m) for m in names],
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    out = {}
    for i, m in enumerate(names):
        use = chosen[m]
        if use is None:
            out[m] = nan_ci(float(got.estimate[i]), n_groups, int(n_resamples), method, confidence, True)
            continue
        low, high = got.bounds[use][0][i], got.bounds[use][1][i]
        lo_limit, hi_limit = range_of(m)
        source = got.loo if use == "jackknife" else got.distribution
        assert source is not None
        out[m] = BootstrapCI(
            float(got.estimate[i]),
            float(np.clip(low, lo_limit, hi_limit)),
            float(np.clip(high, lo_limit, hi_limit)),
            n_groups,
            int(n_resamples),
            use,
            float(confidence),
            int(np.isnan(source[i]).sum()),
        )
    return out


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
    """Point estimate and CI over groups of one metric (a name in METRICS or a WeightedMetric).

    Scores for score metrics (plcc, srcc, krcc, rmse, binary_acc_5), class indices for class metrics.
    `method="auto"`: the rule's method (iqs.metrics.interval_rule). Fewer groups than the rule's minimum
    for the metric: no interval (NaN bounds, `too_few_groups`); a WeightedMetric gets the strictest rule.
    """
    method = check_settings(n_resamples, confidence, method)
    fn = weighted_metric(metric)
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "custom")
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D of one length, got {y_true.shape} and {y_pred.shape}"
        )
    codes, n_groups = group_codes(groups, len(y_true))
    return metric_intervals(
        [name],
        lambda w: fn(y_true, y_pred, w)[None, :],
        codes,
        n_groups,
        n_resamples=n_resamples,
        confidence=confidence,
        method=method,
        seed=seed,
    )[name]


def _p_value(dist: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'delta = 0' from the distribution of delta, at least 1/B."""
    finite = dist[np.isfinite(dist)]
    if finite.size == 0:
        return float("nan")
    below = float(np.mean(finite <= 0.0))
    above = float(np.mean(finite >= 0.0))
    return float(min(1.0, max(2.0 * min(below, above), 1.0 / finite.size)))


def _t_p_value(delta: float, se: float, n_groups: int) -> float:
    """Two-sided p of 'delta = 0' from the jackknife SE and t(G-1): the jackknife interval's own test."""
    if not (math.isfinite(delta) and math.isfinite(se)):
        return float("nan")
    if se == 0.0:
        return 1.0 if delta == 0.0 else 0.0
    return float(2.0 * stats.t.sf(abs(delta) / se, n_groups - 1))


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
    """metric(b) - metric(a) on the same rows, CI and p-value from the same resampled (or left-out) groups.

    The metric's rule (iqs.metrics.interval_rule) decides the method and the minimum number of groups:
    below it the delta has no CI and no p-value (`too_few_groups`). The jackknife's delta is on the
    metric's own scale and its p-value is the matching t test, so the CI excludes 0 exactly when p < 1 -
    confidence, as with the percentile bootstrap's p-value. `y_true_b`: run b's truth when it differs from
    a's (class labels under another threshold pair); by default both runs are judged against `y_true`.
    """
    method = check_settings(n_resamples, confidence, method)
    fn = weighted_metric(metric)
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "custom")
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
    use = methods_for([name], n_groups, method)[name]
    if n_groups < 2 or use is None:
        d, va, vb = stat(np.ones((1, len(y_true))))[:, 0] if len(y_true) else (nan, nan, nan)
        return PairedResult(
            float(va), float(vb), float(d), nan, nan, nan, n_groups, int(n_resamples), use or method,
            confidence, use is None and len(y_true) > 0,
        )  # fmt: skip
    got = group_intervals(
        stat,
        codes,
        n_groups,
        [use],
        scales=["identity"] * 3,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    delta = float(got.estimate[0])
    if use == "jackknife":
        assert got.loo is not None
        n_ok = int(np.isfinite(got.loo[0]).all())
        se = math.sqrt((n_groups - 1) / n_groups * float(((got.loo[0] - got.loo[0].mean()) ** 2).sum()))
        p = _t_p_value(delta, se, n_groups) if n_ok else nan
    else:
        assert got.distribution is not None
        p = _p_value(got.distribution[0])
    return PairedResult(
        estimate_a=float(got.estimate[1]),
        estimate_b=float(got.estimate[2]),
        delta=delta,
        low=float(got.bounds[use][0][0]),
        high=float(got.bounds[use][1][0]),
        p_value=p,
        n_groups=n_groups,
        n_resamples=int(n_resamples),
        method=use,
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
