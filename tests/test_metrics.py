from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    mean_squared_error,
)

from iqs.data.scale import assign_labels
from iqs.metrics import METRIC_NAMES, EarthMoversDistance, GroupedQualityMetrics

NAMES = ["ava", "koniq10k", "spaq"]
SIZES = [157, 61, 23]  # deliberately unequal


def numpy_emd(p: np.ndarray, q: np.ndarray, r: float = 2.0) -> np.ndarray:
    d = np.cumsum(p, axis=1) - np.cumsum(q, axis=1)
    return np.mean(np.abs(d) ** r, axis=1) ** (1.0 / r)


def make_data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(np.repeat(np.arange(len(SIZES)), SIZES))
    n = len(idx)
    true = np.clip(rng.normal(5.4, 0.9, n), 1, 10)
    # quality differs by source, and rounding gives ties (AVA means have 2-3 digits)
    true = np.round(true + 0.4 * idx, 1)
    pred = np.round(np.clip(0.6 * true + 2.0 + rng.normal(0, 0.6, n), 1, 10), 2)
    true_dist = rng.dirichlet(np.ones(10), n)
    pred_dist = rng.dirichlet(np.ones(10) * 2, n)
    return {
        "idx": idx,
        "true": true,
        "pred": pred,
        "true_cls": assign_labels(true, 5, 6),
        "pred_cls": assign_labels(pred, 5, 6),
        "true_dist": true_dist,
        "pred_dist": pred_dist,
    }


def feed(m: GroupedQualityMetrics, d: dict[str, np.ndarray], batch: int = 50, dist: bool = True) -> None:
    for s in range(0, len(d["idx"]), batch):
        sl = slice(s, s + batch)
        m.update(
            torch.tensor(d["pred"][sl], dtype=torch.float32),
            torch.tensor(d["true"][sl], dtype=torch.float32),
            torch.tensor(d["pred_cls"][sl]),
            torch.tensor(d["true_cls"][sl]),
            torch.tensor(d["idx"][sl]),
            torch.tensor(d["pred_dist"][sl], dtype=torch.float32) if dist else None,
            torch.tensor(d["true_dist"][sl], dtype=torch.float32) if dist else None,
        )


def reference(d: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, float]:
    # float32 round trip, as the metrics see the batch
    p = d["pred"][mask].astype(np.float32).astype(np.float64)
    t = d["true"][mask].astype(np.float32).astype(np.float64)
    pc, tc = d["pred_cls"][mask], d["true_cls"][mask]
    f1 = f1_score(tc, pc, labels=[0, 1, 2], average=None, zero_division=0)
    pdist = d["pred_dist"][mask].astype(np.float32).astype(np.float64)
    tdist = d["true_dist"][mask].astype(np.float32).astype(np.float64)
    return {
        "plcc": stats.pearsonr(p, t)[0],
        "srcc": stats.spearmanr(p, t)[0],
        "krcc": stats.kendalltau(p, t)[0],
        "rmse": math.sqrt(mean_squared_error(t, p)),
        "emd": float(numpy_emd(pdist, tdist).mean()),
        "acc": accuracy_score(tc, pc),
        "f1_bad": f1[0],
        "f1_normal": f1[1],
        "f1_good": f1[2],
        "macro_f1": f1_score(tc, pc, average="macro", zero_division=0),
        "balanced_acc": balanced_accuracy_score(tc, pc),
        "binary_acc_5": accuracy_score(t > 5, p > 5),
    }


def test_every_metric_matches_scipy_and_sklearn_per_group_and_all() -> None:
    d = make_data()
    m = GroupedQualityMetrics(NAMES, has_dist=True)
    feed(m, d, batch=37)  # batches cut across groups
    got = m.compute()
    assert set(got) == {f"{g}/{k}" for g in [*NAMES, "all"] for k in METRIC_NAMES}
    masks = {name: d["idx"] == i for i, name in enumerate(NAMES)} | {"all": np.ones(len(d["idx"]), bool)}
    for group, mask in masks.items():
        ref = reference(d, mask)
        for k, v in ref.items():
            assert got[f"{group}/{k}"] == pytest.approx(v, abs=1e-6), f"{group}/{k}"
    cms = m.confusion_matrices()
    for group, mask in masks.items():
        np.testing.assert_array_equal(
            cms[group], confusion_matrix(d["true_cls"][mask], d["pred_cls"][mask], labels=[0, 1, 2])
        )
    assert m.sample_counts() == {"ava": 157, "koniq10k": 61, "spaq": 23, "all": 241}


def test_batching_does_not_change_results_and_reset_clears() -> None:
    d = make_data(seed=3)
    one, many = GroupedQualityMetrics(NAMES, has_dist=True), GroupedQualityMetrics(NAMES, has_dist=True)
    feed(one, d, batch=10_000)
    feed(many, d, batch=7)
    a, b = one.compute(), many.compute()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-9), k
    many.reset()
    assert all(math.isnan(v) for v in many.compute().values())
    feed(many, d, batch=13)
    assert many.compute()["all/plcc"] == pytest.approx(a["all/plcc"], abs=1e-9)


def test_without_dist_there_is_no_emd_key() -> None:
    d = make_data()
    m = GroupedQualityMetrics(NAMES, has_dist=False)
    feed(m, d, dist=False)
    assert not any(k.endswith("/emd") for k in m.compute())
    with pytest.raises(ValueError, match="pred_dist"):
        GroupedQualityMetrics(NAMES, has_dist=True).update(
            torch.ones(2), torch.ones(2), torch.zeros(2), torch.zeros(2), torch.zeros(2)
        )


def test_tiny_and_empty_groups_give_nan_correlations_not_a_crash() -> None:
    m = GroupedQualityMetrics(["big", "single", "empty"], has_dist=False)
    rng = np.random.default_rng(1)
    t = torch.tensor(rng.uniform(2, 9, 20))
    p = t + torch.tensor(rng.normal(0, 0.5, 20))
    idx = torch.zeros(20, dtype=torch.long)
    idx[5] = 1
    m.update(
        p, t, torch.tensor(assign_labels(p.numpy(), 5, 6)), torch.tensor(assign_labels(t.numpy(), 5, 6)), idx
    )
    got = m.compute()
    for k in ("plcc", "srcc", "krcc"):
        assert math.isnan(got[f"single/{k}"])
        assert math.isnan(got[f"empty/{k}"])
        assert not math.isnan(got[f"big/{k}"])
    assert got["single/rmse"] == pytest.approx(abs(float(p[5] - t[5])), abs=1e-9)
    assert got["single/acc"] in (0.0, 1.0)
    assert all(math.isnan(got[f"empty/{k}"]) for k in METRIC_NAMES if k != "emd")
    assert m.confusion_matrices()["empty"].sum() == 0


def test_constant_prediction_gives_nan_correlations_like_scipy() -> None:
    # the collapsed "always predicts 5" model of the seed notes
    t = torch.tensor([3.0, 4.5, 5.2, 6.1, 7.3])
    p = torch.full((5,), 5.0)
    m = GroupedQualityMetrics(["ava"])
    m.update(p, t, torch.zeros(5), torch.tensor(assign_labels(t.numpy(), 5, 6)), torch.zeros(5))
    got = m.compute()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(stats.spearmanr(p.numpy(), t.numpy())[0])
    assert all(math.isnan(got[f"ava/{k}"]) for k in ("plcc", "srcc", "krcc"))
    assert got["ava/rmse"] == pytest.approx(math.sqrt(mean_squared_error(t.numpy(), p.numpy())))


def test_balanced_accuracy_of_a_single_class_source_matches_sklearn() -> None:
    # a source that contributes bad images only, while the model predicts other classes too
    tc = np.zeros(12, dtype=np.int64)
    pc = np.array([0, 0, 0, 1, 1, 2, 0, 0, 1, 0, 2, 0])
    m = GroupedQualityMetrics(["koniq10k"])
    m.update(torch.ones(12), torch.ones(12), torch.tensor(pc), torch.tensor(tc), torch.zeros(12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = balanced_accuracy_score(tc, pc)
    assert m.compute()["koniq10k/balanced_acc"] == pytest.approx(want)
    assert want == pytest.approx(7 / 12)


def test_logits_are_argmaxed_and_non_common_scale_scores_skip_rmse_and_binary() -> None:
    logits = torch.tensor([[2.0, 0.1, 0.0], [0.0, 0.0, 3.0], [0.0, 1.0, 0.5]])
    m = GroupedQualityMetrics(["a"], common_scale_score=False)
    m.update(
        torch.tensor([0.2, 1.9, 1.1]),
        torch.tensor([0.0, 2.0, 2.0]),
        logits,
        torch.tensor([0, 2, 2]),
        torch.zeros(3),
    )
    got = m.compute()
    assert got["a/acc"] == pytest.approx(2 / 3)
    assert math.isnan(got["a/rmse"]) and math.isnan(got["a/binary_acc_5"])


def test_binary_accuracy_uses_strictly_greater_than_5() -> None:
    m = GroupedQualityMetrics(["a"])
    t = torch.tensor([5.0, 5.0, 5.01, 4.0])
    p = torch.tensor([5.0, 5.2, 5.5, 6.0])  # agree, disagree, agree, disagree
    m.update(p, t, torch.zeros(4), torch.zeros(4), torch.zeros(4))
    assert m.compute()["a/binary_acc_5"] == pytest.approx(0.5)


def test_emd_metric_matches_numpy_and_rejects_logits() -> None:
    rng = np.random.default_rng(2)
    p, q = rng.dirichlet(np.ones(10), 33), rng.dirichlet(np.ones(10), 33)
    emd = EarthMoversDistance()
    emd.update(torch.tensor(p[:20]), torch.tensor(q[:20]))
    emd.update(torch.tensor(p[20:]), torch.tensor(q[20:]))
    assert float(emd.compute()) == pytest.approx(numpy_emd(p, q).mean(), abs=1e-12)
    # identical distributions are at distance 0; a one-bin shift of a point mass is sqrt(1/10)
    same = EarthMoversDistance()
    same.update(torch.tensor(p), torch.tensor(p))
    assert float(same.compute()) == pytest.approx(0.0, abs=1e-12)
    shift = EarthMoversDistance()
    shift.update(torch.eye(10)[[4]], torch.eye(10)[[5]])
    assert float(shift.compute()) == pytest.approx(math.sqrt(0.1))
    with pytest.raises(ValueError, match="row 0 sums to"):
        EarthMoversDistance().update(torch.randn(3, 10) + 5, torch.tensor(q[:3]))


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="unique"):
        GroupedQualityMetrics(["ava", "ava"])
    with pytest.raises(ValueError, match="'all'"):
        GroupedQualityMetrics(["all"])
    m = GroupedQualityMetrics(["ava", "spaq"])
    with pytest.raises(ValueError, match="dataset_idx"):
        m.update(torch.ones(3), torch.ones(3), torch.zeros(3), torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="pred_score has 2 values"):
        m.update(torch.ones(2), torch.ones(3), torch.zeros(3), torch.zeros(3), torch.zeros(3))


def test_module_moves_with_its_parent_and_keeps_float64_states() -> None:
    parent = torch.nn.Module()
    parent.metrics = GroupedQualityMetrics(NAMES, has_dist=True)
    parent.float()
    assert parent.metrics.groups["all"]["score"]["plcc"].mean_x.dtype == torch.float64
