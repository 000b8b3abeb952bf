"""Every evaluation metric, defined once: a `Metric` record per name, in the order runs report them.

    metric("srcc").weighted(y_true, y_pred, w)   # (B,) values on weighted rows (bootstrap, jackknife)
    metric("acc").value(true_class, pred_class)  # one value on plain rows (decision cuts)
    metric("plcc").streamed.make(3)              # the torchmetrics metric training accumulates (DDP-synced)

Who asks what: training's per-source metrics (iqs.metrics.grouped) build their torchmetrics from
`streamed`; the intervals (iqs.metrics.bootstrap, resample, coverage) call `weighted` and read
`interval_scale`, `value_range`, `min_groups` (through iqs.metrics.interval_rule); the learned decision
cuts score the `tuned` metrics with `value`; reports read `higher_is_better`, `kind` (label metrics depend
on the threshold pair) and `table_column` (`make train`'s table). Definitions: README, "Models, heads and
metrics", and the docstring of iqs.metrics.grouped.

Adding a metric: its weighted function (iqs.metrics.weighted) and its record here; a torchmetric that
needs new inputs is the one case that also touches iqs.metrics.grouped. No torch import at module
load (`iqs compare` starts without torch): the torchmetrics are built by the `make` functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from iqs.core.classes import CLASS_NAMES
from iqs.core.registry import Registry
from iqs.metrics import weighted as wm
from iqs.metrics.weighted import WeightedMetric

# kinds: which columns a metric reads and how it behaves
CORRELATION = "correlation"  # predicted vs true scores, in [-1, 1]; NaN together on a constant side
SCORE = "score"  # predicted vs true scores on the common scale 1..10
LABEL = "label"  # predicted vs true classes: its value depends on the threshold pair (the labels)
DISTRIBUTION = "distribution"  # predicted vs true 10-bin distributions (distribution heads only)
KINDS = (CORRELATION, SCORE, LABEL, DISTRIBUTION)

# what a torchmetric's update() takes (iqs.metrics.grouped feeds each from the batch); also the key of
# the group's MetricCollection that holds it
SCORES = "score"  # (pred_score, true_score), in the float64 states of the score metrics
CLASSES = "cls"  # (pred_class, true_class) class indices
ABOVE_THRESHOLD = "binary"  # (pred_score > BINARY_THRESHOLD, true_score > BINARY_THRESHOLD)
DISTRIBUTIONS = "dist"  # (pred_dist, true_dist) (N, 10)
INPUTS = (SCORES, CLASSES, ABOVE_THRESHOLD, DISTRIBUTIONS)


def _first(value: Any) -> float:
    return float(value)


@dataclass(frozen=True)
class Streamed:
    """How training accumulates a metric: one torchmetrics metric per group, synced over DDP ranks."""

    state: str  # the torchmetric's key in its group: records naming the same key share one torchmetric
    inputs: str  # one of INPUTS
    make: Callable[[int], Any]  # num_classes -> the torchmetrics.Metric
    read: Callable[[Any], float] = _first  # the metric's value from that torchmetric's compute()


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # one of KINDS
    higher_is_better: bool
    streamed: Streamed  # training (iqs.metrics.grouped)
    # (y_true (N,), y_pred (N,), weights (B, N)) -> (B,); None: no interval (EMD: the predictions CSV keeps
    # no distributions)
    weighted: WeightedMetric | None
    interval_scale: str = "logit"  # the jackknife's scale (iqs.metrics.resample.SCALES)
    value_range: tuple[float, float] = (0.0, 1.0)  # an interval is clipped to it
    # the fewest test groups with an interval, read off the coverage benchmark; None: the rule's FLOOR
    min_groups: int | None = None
    common_scale: bool = False  # NaN for a head whose score is not on the common scale (classification)
    table_column: int | None = None  # its column in `make train`'s test table; None: not shown
    tuned: bool = False  # also scored under the learned decision cuts (iqs.train.decision_cuts)

    @property
    def columns(self) -> str:
        """Which columns of a predictions table it reads: "score" or "class"."""
        return "class" if self.kind == LABEL else "score"

    def value(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        """The metric of plain (unweighted) rows: the weighted function with every weight 1."""
        if self.weighted is None:
            raise ValueError(f"metric '{self.name}' has no function on rows (only its torchmetric)")
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        return float(self.weighted(y_true, y_pred, np.ones((1, len(y_true))))[0])


# ---------------------------------------------------------------- torchmetrics (imported on call)


def _pearson(_: int) -> Any:
    from torchmetrics.regression import PearsonCorrCoef

    return PearsonCorrCoef()


def _spearman(_: int) -> Any:
    from torchmetrics.regression import SpearmanCorrCoef

    return SpearmanCorrCoef()


def _kendall(_: int) -> Any:
    from torchmetrics.regression import KendallRankCorrCoef

    return KendallRankCorrCoef(variant="b")


def _rmse(_: int) -> Any:
    from torchmetrics.regression import MeanSquaredError

    return MeanSquaredError(squared=False)


def _emd(_: int) -> Any:
    from iqs.metrics.emd import EarthMoversDistance

    return EarthMoversDistance(r=2.0)


def _accuracy(num_classes: int) -> Any:
    from torchmetrics.classification import MulticlassAccuracy

    return MulticlassAccuracy(num_classes=num_classes, average="micro")


def _f1_per_class(num_classes: int) -> Any:
    from torchmetrics.classification import MulticlassF1Score

    return MulticlassF1Score(num_classes=num_classes, average="none")


def _macro_f1(num_classes: int) -> Any:
    from torchmetrics.classification import MulticlassF1Score

    return MulticlassF1Score(num_classes=num_classes, average="macro")


def _confusion(num_classes: int) -> Any:
    from torchmetrics.classification import MulticlassConfusionMatrix

    return MulticlassConfusionMatrix(num_classes=num_classes)


def _binary_accuracy(_: int) -> Any:
    from torchmetrics.classification import BinaryAccuracy

    return BinaryAccuracy()


def _balanced_from_confusion(confmat: Any) -> float:
    # From the confusion matrix rather than MulticlassRecall(average="macro"): torchmetrics counts a class
    # that is predicted but absent from the truth as recall 0, which halves the score of a source that
    # holds one class only (e.g. KonIQ contributing bad images); sklearn skips it.
    confmat = confmat.double()
    support = confmat.sum(dim=1)
    present = support > 0
    return float((confmat.diagonal()[present] / support[present]).mean())


# every group keeps the confusion matrix (its sample count, `confusion_matrices()`); balanced_acc reads it
CONFUSION = Streamed("confmat", CLASSES, _confusion)


def _f1_of(index: int) -> Streamed:
    return Streamed("f1", CLASSES, _f1_per_class, read=lambda per_class: float(per_class[index]))


# ---------------------------------------------------------------- the metrics

REGISTRY: Registry[Metric] = Registry("metric")
_ORDER: list[Metric] = []


def register(m: Metric) -> Metric:
    if m.kind not in KINDS or m.streamed.inputs not in INPUTS:
        raise ValueError(f"metric '{m.name}': kind {m.kind!r} / inputs {m.streamed.inputs!r} unknown")
    REGISTRY.register(m.name)(m)
    _ORDER.append(m)
    return m


_CORR = {"interval_scale": "fisher_z", "value_range": (-1.0, 1.0)}
register(
    Metric("plcc", CORRELATION, True, Streamed("plcc", SCORES, _pearson), wm.plcc, **_CORR, table_column=0)
)
register(
    Metric("srcc", CORRELATION, True, Streamed("srcc", SCORES, _spearman), wm.srcc, **_CORR, table_column=1)
)
register(Metric("krcc", CORRELATION, True, Streamed("krcc", SCORES, _kendall), wm.krcc, **_CORR))
# RMSE's jackknife covers 0.89 at 5 groups, 0.90 at 10 and 15, 0.92 at 30, 0.94 at 100
register(
    Metric(
        "rmse",
        SCORE,
        False,
        Streamed("rmse", SCORES, _rmse),
        wm.rmse,
        interval_scale="log",
        value_range=(0.0, math.inf),
        min_groups=10,
        common_scale=True,
        table_column=7,
    )
)
register(
    Metric(
        "emd", DISTRIBUTION, False, Streamed("emd", DISTRIBUTIONS, _emd), None, value_range=(0.0, math.inf)
    )
)
register(Metric("acc", LABEL, True, Streamed("acc", CLASSES, _accuracy), wm.acc, table_column=2, tuned=True))
for _i, _c in enumerate(CLASS_NAMES):
    register(Metric(f"f1_{_c}", LABEL, True, _f1_of(_i), wm.f1_of_class(_i), table_column=4 + _i))
register(
    Metric(
        "macro_f1",
        LABEL,
        True,
        Streamed("macro_f1", CLASSES, _macro_f1),
        wm.macro_f1,
        table_column=3,
        tuned=True,
    )
)
register(
    Metric(
        "balanced_acc",
        LABEL,
        True,
        Streamed(CONFUSION.state, CLASSES, CONFUSION.make, read=_balanced_from_confusion),
        wm.balanced_acc,
        tuned=True,
    )
)
register(
    Metric(
        "binary_acc_5",
        SCORE,
        True,
        Streamed("binary", ABOVE_THRESHOLD, _binary_accuracy),
        wm.binary_acc_5,
        common_scale=True,
    )
)


def metric(name: str) -> Metric:
    """The record called `name` (unknown names get a hint and the list)."""
    return REGISTRY.get(name)


def all_metrics() -> tuple[Metric, ...]:
    """Every record, in the order runs report them."""
    return tuple(_ORDER)


# ---------------------------------------------------------------- views the consumers share

METRIC_NAMES = tuple(m.name for m in _ORDER)
HIGHER_IS_BETTER = {m.name: m.higher_is_better for m in _ORDER}
CORRELATIONS = tuple(m.name for m in _ORDER if m.kind == CORRELATION)
# metrics whose value depends on the threshold pair (the labels); the others compare across pairs
LABEL_METRICS = tuple(m.name for m in _ORDER if m.kind == LABEL)
# `make train`'s test table, in its column order
TABLE_METRICS = tuple(
    m.name for m in sorted((m for m in _ORDER if m.table_column is not None), key=lambda m: m.table_column)
)
TUNED_METRICS = tuple(m.name for m in _ORDER if m.tuned)
# metrics with intervals: metric -> (columns, weighted function); score columns first, then class columns
# (the row order of the intervals tables)
WEIGHTED: dict[str, tuple[str, WeightedMetric]] = {
    m.name: (m.columns, m.weighted)
    for m in sorted((m for m in _ORDER if m.weighted is not None), key=lambda m: m.columns == "class")
}


def weighted_metric(m: str | WeightedMetric) -> WeightedMetric:
    """The weighted function of a metric name; a callable is taken as is (a custom metric)."""
    if callable(m):
        return m
    if m not in WEIGHTED:
        raise ValueError(f"no bootstrap for metric '{m}'; known: {', '.join(WEIGHTED)}")
    return WEIGHTED[m][1]
