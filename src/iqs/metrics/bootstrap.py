"""Confidence intervals over groups (jackknife-t or cluster bootstrap), paired run-vs-run differences,
and Fisher-z intervals.

    ci = cluster_bootstrap_ci("srcc", true_score, pred_score, groups)          # ci.estimate, ci.low, ci.high
    d = paired_bootstrap("macro_f1", true_class, pred_a, pred_b, groups)        # d.delta, d.low, d.high, d.p_value
    cis = bootstrap_metrics(EvalRows.from_predictions(frame, "demo_ava"), ["srcc", "acc"])

**The unit is the group, not the image.** A group (a photograph and every crop or distortion of it;
`group` in the data table) is what the splits keep together, so it is also what a new test set would
sample anew: images of one group are not independent, and resampling images would give intervals that
are too narrow. A bootstrap resample draws the test split's groups with replacement
(`scipy.stats.bootstrap` over the group indices); a jackknife leaves one group out at a time. Either
way a row counts as many times as its group was drawn (0 when left out), and every metric is computed
on those weighted rows. The weighted metrics (iqs.metrics.weighted) equal the plain metric of the
resampled rows (tests compare them with scipy/sklearn on `np.repeat`-ed rows).

**Which interval: `iqs.metrics.interval_rule`** (`method="auto"`, the default). It was read off a
coverage simulation (iqs.metrics.coverage, `bench/coverage_bench.py`): the jackknife-t over groups from
5 groups (10 for RMSE), the percentile bootstrap for very large test sets, and **no interval below the
minimum**: a `BootstrapCI` then has NaN bounds and `too_few_groups=True`, the logged metrics carry
`<metric>_ci_too_few_groups = 1` instead of `_lo`/`_hi`, and every printout says
`n=3 groups: too few for an interval; use data.folds=k`. An explicit `method=` (percentile, bca, basic,
jackknife) is used above the minimum only.

**Paired p-value.** Both runs are scored on the same resampled (or left-out) groups. The jackknife's
p-value is its interval's t test on the difference; the bootstrap's is 2 * min(P*(delta <= 0),
P*(delta >= 0)) over the bootstrap distribution, floored at 1/n_resamples. Either way the interval
excludes 0 exactly when p < 1 - confidence. It says nothing about test sets drawn from other photographs.

**Fisher z.** For PLCC and SRCC, `fisher_z_ci` gives the closed-form interval for n *independent*
pairs (Bonett & Wright's variance for Spearman); on independent data it agrees with the bootstrap,
on clustered data the interval over groups is wider (tests check both).

EMD has no interval here: the predictions CSV does not keep the true score distributions.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from iqs.metrics.interval_rule import TOO_FEW_SUFFIX
from iqs.metrics.label_rule import class_columns
from iqs.metrics.names import ALL
from iqs.metrics.registry import WEIGHTED as METRICS
from iqs.metrics.resample import (
    DEFAULT_CONFIDENCE,
    DEFAULT_METHOD,
    DEFAULT_RESAMPLES,
    METHODS,
    BootstrapCI,
    PairedResult,
    check_settings,
    cluster_bootstrap_ci,
    fisher_z_ci,
    group_codes,
    metric_intervals,
    paired_bootstrap,
)
from iqs.metrics.weighted import WeightedMetric

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_METHOD",
    "DEFAULT_RESAMPLES",
    "METHODS",
    "METRICS",
    "BootstrapCI",
    "EvalRows",
    "PairedResult",
    "WeightedMetric",
    "bootstrap_metrics",
    "cluster_bootstrap_ci",
    "fisher_z_ci",
    "interval_metrics",
    "paired_bootstrap",
    "predictions_intervals",
]

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
        """Rows of `dataset` (or `all`) of a test-predictions table (iqs.report.artifacts columns).

        Classes follow the label rule (iqs.metrics.label_rule): a source is scored on its own threshold
        pair, `all` on the run's declared pair. Without a `group` column every image is its own group.
        """
        part = predictions if dataset == ALL else predictions[predictions["dataset"].astype(str) == dataset]
        true_col, pred_col = class_columns(dataset, predictions.columns)
        if "group" in part.columns:
            groups = part["group"]
        else:
            warnings.warn(
                "predictions without a `group` column (a run logged before groups were stored): every "
                "image is its own group, so intervals are too narrow where images share a photograph",
                stacklevel=2,
            )
            groups = part["dataset"].astype(str) + ":" + part["image_id"].astype(str)
        return cls(
            true_score=part["score"].to_numpy(np.float64),
            pred_score=part["pred_score"].to_numpy(np.float64),
            true_class=part[true_col].to_numpy(np.int64),
            pred_class=part[pred_col].to_numpy(np.int64),
            groups=groups.astype(str).to_numpy(),
            image_ids=(part["dataset"].astype(str) + ":" + part["image_id"].astype(str)).to_numpy(),
        )

    def columns_for(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        columns = METRICS[metric][0] if metric in METRICS else "score"
        return (
            (self.true_score, self.pred_score) if columns == "score" else (self.true_class, self.pred_class)
        )


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
    method = check_settings(n_resamples, confidence, method)
    names = [m for m in metrics if m in METRICS]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"no bootstrap for metrics {unknown}; known: {', '.join(METRICS)}")
    codes, n_groups = group_codes(rows.groups, len(rows.true_score))

    def stat(w: np.ndarray) -> np.ndarray:
        return np.stack([METRICS[m][1](*rows.columns_for(m), w) for m in names])

    return metric_intervals(
        names,
        stat,
        codes,
        n_groups,
        n_resamples=n_resamples,
        confidence=confidence,
        method=method,
        seed=seed,
    )


def predictions_intervals(
    predictions: pd.DataFrame,
    datasets: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    method: str = DEFAULT_METHOD,
    seed: int = 0,
) -> pd.DataFrame:
    """Long table (dataset, metric, estimate, low, high, n_groups, ...) of a test-predictions table.

    `datasets`: default every source, then `all`; `metrics`: default every metric with a bootstrap.
    """
    if datasets is None:
        datasets = [*sorted(predictions["dataset"].astype(str).unique()), ALL]
    names = list(metrics) if metrics is not None else list(METRICS)
    out = []
    for ds in datasets:
        cis = bootstrap_metrics(
            EvalRows.from_predictions(predictions, ds),
            names,
            n_resamples=n_resamples,
            confidence=confidence,
            method=method,
            seed=seed,
        )
        out += [{"dataset": ds, "metric": m, **ci.__dict__} for m, ci in cis.items()]
    return pd.DataFrame(out)


def interval_metrics(intervals: pd.DataFrame, stage: str = "test") -> dict[str, float]:
    """MLflow metrics of an intervals table: `<stage>/<ds>/<metric>_lo`, `_hi`, and `<stage>/<ds>/n_groups`.

    A metric with too few groups for an interval (iqs.metrics.interval_rule) gets no `_lo`/`_hi` but
    `<stage>/<ds>/<metric>_ci_too_few_groups` = 1, so no reader mistakes a missing interval for a lost one.
    """
    out: dict[str, float] = {}
    for row in intervals.itertuples(index=False):
        if getattr(row, "too_few_groups", False):
            out[f"{stage}/{row.dataset}/{row.metric}{TOO_FEW_SUFFIX}"] = 1.0
        else:
            out[f"{stage}/{row.dataset}/{row.metric}_lo"] = float(row.low)
            out[f"{stage}/{row.dataset}/{row.metric}_hi"] = float(row.high)
        out[f"{stage}/{row.dataset}/n_groups"] = float(row.n_groups)
    return out
