"""Every registered metric (iqs.metrics.registry) against its scipy/sklearn reference: on plain rows, on
weighted rows (the bootstrap's), and through its own torchmetric (training's)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, mean_squared_error

from iqs.core.scale import assign_labels
from iqs.metrics import registry
from iqs.metrics.registry import ABOVE_THRESHOLD, CLASSES, DISTRIBUTIONS, SCORES, all_metrics, metric


def _emd(p: np.ndarray, q: np.ndarray) -> float:
    """NIMA's EMD (r=2) of 10-bin distributions, averaged over rows; scipy has no r=2 CDF distance."""
    d = np.cumsum(p, axis=1) - np.cumsum(q, axis=1)
    return float(np.mean(np.mean(d**2, axis=1) ** 0.5))


def _f1_of(c: int) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda t, p: f1_score(t, p, labels=[c], average=None, zero_division=0)[0]


# (columns, reference on plain rows): every registered metric needs one (see the first test)
REFERENCES: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray], float]]] = {
    "plcc": ("score", lambda t, p: stats.pearsonr(t, p).statistic),
    "srcc": ("score", lambda t, p: stats.spearmanr(t, p).statistic),
    "krcc": ("score", lambda t, p: stats.kendalltau(t, p).statistic),
    "rmse": ("score", lambda t, p: math.sqrt(mean_squared_error(t, p))),
    "binary_acc_5": ("score", lambda t, p: accuracy_score(t > 5, p > 5)),
    "emd": ("dist", _emd),
    "acc": ("class", accuracy_score),
    "f1_bad": ("class", _f1_of(0)),
    "f1_normal": ("class", _f1_of(1)),
    "f1_good": ("class", _f1_of(2)),
    "macro_f1": ("class", lambda t, p: f1_score(t, p, average="macro", zero_division=0)),
    "balanced_acc": ("class", balanced_accuracy_score),
}


def _data(seed: int, n: int = 90, classes: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    true = np.round(rng.normal(5.5, 1.2, n), 1)  # rounded: ties on both sides
    pred = np.round(0.5 * true + 2.7 + rng.normal(0, 0.8, n), 1)
    tc = assign_labels(true, 5, 6)
    if classes < 3:  # a source that holds fewer classes than the model predicts
        tc = np.minimum(tc, classes - 1)
    return {
        "score": (true, pred),
        "class": (tc, assign_labels(pred, 5, 6)),
        "dist": (rng.dirichlet(np.ones(10), n), rng.dirichlet(np.ones(10) * 2, n)),
    }


def test_every_registered_metric_has_a_reference_and_one_column_kind() -> None:
    assert set(REFERENCES) == set(registry.METRIC_NAMES)
    for m in all_metrics():
        columns = REFERENCES[m.name][0]
        assert (m.weighted is None) == (columns == "dist"), m.name  # EMD alone has no rows in the CSV
        if m.weighted is not None:
            assert m.columns == columns, m.name


@pytest.mark.parametrize("seed,classes", [(0, 3), (1, 3), (2, 1), (3, 2)])
def test_each_metric_on_plain_and_weighted_rows_equals_its_reference(seed: int, classes: int) -> None:
    d = _data(seed, classes=classes)
    w = np.random.default_rng(seed + 100).integers(0, 4, (5, 90)).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn: a class absent from the truth
        for m in all_metrics():
            if m.weighted is None:
                continue
            columns, ref = REFERENCES[m.name]
            t, p = d[columns]
            assert m.value(t, p) == pytest.approx(ref(t, p), abs=1e-12), m.name
            got = m.weighted(t, p, w)
            for b, wb in enumerate(w.astype(np.int64)):
                want = ref(np.repeat(t, wb), np.repeat(p, wb))
                assert got[b] == pytest.approx(want, abs=1e-12), (m.name, b)


def _streamed_value(name: str, d: dict[str, tuple[np.ndarray, np.ndarray]]) -> float:
    """The metric through its own torchmetric alone, fed as training feeds it (iqs.metrics.grouped)."""
    s = metric(name).streamed
    tm = s.make(3)
    if s.inputs == SCORES:
        tm.set_dtype(torch.float64)
    true, pred = d[REFERENCES[name][0]]
    inputs = {
        SCORES: lambda: (torch.tensor(pred), torch.tensor(true)),
        CLASSES: lambda: (torch.tensor(pred), torch.tensor(true)),
        ABOVE_THRESHOLD: lambda: (torch.tensor(pred > 5).long(), torch.tensor(true > 5).long()),
        DISTRIBUTIONS: lambda: (torch.tensor(pred), torch.tensor(true)),
    }[s.inputs]()
    for half in (slice(0, 40), slice(40, None)):  # two batches: the states accumulate
        tm.update(*(x[half] for x in inputs))
    return s.read(tm.compute())


@pytest.mark.parametrize("seed,classes", [(0, 3), (2, 1)])
def test_each_metric_through_its_torchmetric_equals_its_reference(seed: int, classes: int) -> None:
    d = _data(seed, classes=classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in all_metrics():
            columns, ref = REFERENCES[m.name]
            t, p = d[columns]
            want = ref(p, t) if columns == "dist" else ref(t, p)
            assert _streamed_value(m.name, d) == pytest.approx(want, abs=1e-6), m.name


def test_the_lists_read_off_the_records() -> None:
    columns = [metric(n).table_column for n in registry.TABLE_METRICS]
    assert columns == list(range(len(columns)))  # one column each, no gap
    assert set(registry.TUNED_METRICS) <= set(registry.LABEL_METRICS)
    assert all(metric(n).interval_scale == "fisher_z" for n in registry.CORRELATIONS)
    # the intervals table: score columns first, then class columns, each in the registry's order
    kinds = [c for c, _ in registry.WEIGHTED.values()]
    assert kinds == sorted(kinds, key=lambda c: c == "class") and "emd" not in registry.WEIGHTED
    assert not registry.HIGHER_IS_BETTER["rmse"] and registry.HIGHER_IS_BETTER["srcc"]


def test_an_unknown_metric_is_refused_with_a_hint() -> None:
    with pytest.raises(KeyError, match="Did you mean 'srcc'"):
        metric("srocc")
    with pytest.raises(ValueError, match="no bootstrap for metric 'emd'"):
        registry.weighted_metric("emd")
