from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
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

from iqs.core.scale import assign_labels
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


# ---------------------------------------------------------------- cluster bootstrap (iqs.metrics.bootstrap)

from iqs.metrics import bootstrap as bs  # noqa: E402
from iqs.metrics import weighted  # noqa: E402
from iqs.metrics.label_rule import LabelRule, LabelRuleError  # noqa: E402

SCORE_REFS = {
    "plcc": lambda t, p: stats.pearsonr(t, p).statistic,
    "srcc": lambda t, p: stats.spearmanr(t, p).statistic,
    "krcc": lambda t, p: stats.kendalltau(t, p).statistic,
    "rmse": lambda t, p: math.sqrt(mean_squared_error(t, p)),
    "binary_acc_5": lambda t, p: accuracy_score(t > 5, p > 5),
}
CLASS_REFS = {
    "acc": accuracy_score,
    "f1_bad": lambda t, p: f1_score(t, p, labels=[0], average=None, zero_division=0)[0],
    "f1_normal": lambda t, p: f1_score(t, p, labels=[1], average=None, zero_division=0)[0],
    "f1_good": lambda t, p: f1_score(t, p, labels=[2], average=None, zero_division=0)[0],
    "macro_f1": lambda t, p: f1_score(t, p, average="macro", zero_division=0),
    "balanced_acc": balanced_accuracy_score,
}


@pytest.mark.parametrize("dense_kendall", [True, False])
def test_weighted_metrics_equal_scipy_and_sklearn_on_the_repeated_rows(
    dense_kendall: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not dense_kendall:
        # the per-resample scipy loop of large test sets
        monkeypatch.setattr(weighted, "KENDALL_DENSE_MAX", 0)
    d = make_data(seed=5)
    t, p, tc, pc = d["true"], d["pred"], d["true_cls"], d["pred_cls"]  # rounded: ties on both sides
    w = np.random.default_rng(0).integers(0, 4, (6, len(t))).astype(np.float64)
    assert set(SCORE_REFS) | set(CLASS_REFS) == set(bs.METRICS)
    for b, wb in enumerate(w):
        reps = wb.astype(np.int64)
        for name, ref in SCORE_REFS.items():
            got = bs.METRICS[name][1](t, p, w)[b]
            assert got == pytest.approx(ref(np.repeat(t, reps), np.repeat(p, reps)), abs=1e-12), name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn: a class absent from a resample
            for name, ref in CLASS_REFS.items():
                got = bs.METRICS[name][1](tc, pc, w)[b]
                assert got == pytest.approx(ref(np.repeat(tc, reps), np.repeat(pc, reps)), abs=1e-12), name


def test_cluster_bootstrap_equals_resampling_groups_and_gathering_their_rows() -> None:
    """The weights trick is the cluster bootstrap: same resamples as gathering the drawn groups' rows."""
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 9, 25)
    groups = np.repeat(np.arange(25), sizes)
    t = rng.normal(5, 1, len(groups)) + rng.normal(0, 1, 25)[groups]
    p = t + rng.normal(0, 1, len(groups))
    rows = [np.flatnonzero(groups == g) for g in range(25)]

    def gathered(idx: np.ndarray) -> float:
        take = np.concatenate([rows[i] for i in idx])
        return stats.spearmanr(t[take], p[take]).statistic

    ref = stats.bootstrap(
        (np.arange(25),), gathered, n_resamples=300, vectorized=False, method="percentile",
        rng=np.random.default_rng(7),
    )  # fmt: skip
    names = np.array([f"photo{g:02d}" for g in range(25)])  # sorted like 0..24: group i is rows[i]
    got = bs.cluster_bootstrap_ci("srcc", t, p, names[groups], n_resamples=300, seed=7, method="percentile")
    assert got.low == pytest.approx(ref.confidence_interval.low, abs=1e-12)
    assert got.high == pytest.approx(ref.confidence_interval.high, abs=1e-12)
    assert got.estimate == pytest.approx(stats.spearmanr(t, p).statistic)
    assert got.n_groups == 25 and got.method == "percentile" and got.n_degenerate == 0


def test_fisher_z_matches_scipy_and_agrees_with_the_bootstrap_on_iid_data() -> None:
    rng = np.random.default_rng(2)
    n = 400
    x = rng.normal(size=n)
    y = 0.6 * x + 0.8 * rng.normal(size=n)
    r = stats.pearsonr(x, y)
    lo, hi = bs.fisher_z_ci(r.statistic, n, "pearson")
    ci = r.confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
    iid = np.arange(n)  # every pair its own group: the plain bootstrap
    for metric, kind in (("plcc", "pearson"), ("srcc", "spearman")):
        boot = bs.cluster_bootstrap_ci(metric, x, y, iid, n_resamples=2000, seed=3, method="percentile")
        f_lo, f_hi = bs.fisher_z_ci(boot.estimate, n, kind)
        assert boot.low == pytest.approx(f_lo, abs=0.025), metric
        assert boot.high == pytest.approx(f_hi, abs=0.025), metric
        assert (boot.high - boot.low) == pytest.approx(f_hi - f_lo, rel=0.2), metric


def test_clustered_data_get_a_wider_interval_than_treating_images_as_independent() -> None:
    rng = np.random.default_rng(4)
    n_groups, per = 30, 10
    groups = np.repeat(np.arange(n_groups), per)
    # a photograph's crops share its content and the model's error on it
    true = rng.normal(5, 1, n_groups)[groups] + rng.normal(0, 0.3, groups.size)
    pred = true + rng.normal(0, 0.8, n_groups)[groups] + rng.normal(0, 0.3, groups.size)
    cluster = bs.cluster_bootstrap_ci("srcc", true, pred, groups, seed=0)
    iid = bs.cluster_bootstrap_ci("srcc", true, pred, np.arange(groups.size), seed=0)
    assert cluster.estimate == pytest.approx(iid.estimate)
    assert (cluster.high - cluster.low) > 1.8 * (iid.high - iid.low)
    f_lo, f_hi = bs.fisher_z_ci(iid.estimate, groups.size, "spearman")
    assert (cluster.high - cluster.low) > 1.8 * (f_hi - f_lo)  # the closed form assumes independent pairs


def test_paired_bootstrap_delta_ci_and_p_value() -> None:
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(40), 5)
    true = rng.normal(5, 1, 40)[groups] + rng.normal(0, 0.5, groups.size)
    worse = true + rng.normal(0, 1.2, groups.size)
    better = true + rng.normal(0, 0.4, groups.size)
    res = bs.paired_bootstrap("srcc", true, worse, better, groups, seed=0, method="percentile")
    assert res.estimate_a == pytest.approx(stats.spearmanr(true, worse).statistic)
    assert res.estimate_b == pytest.approx(stats.spearmanr(true, better).statistic)
    assert res.delta == pytest.approx(res.estimate_b - res.estimate_a)
    assert 0 < res.low < res.delta < res.high
    assert res.p_value == pytest.approx(1 / 1000)  # no resample favours a: floored at 1/B
    same = bs.paired_bootstrap("srcc", true, worse, worse, groups, seed=0, method="percentile")
    assert (same.delta, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # two equally good models: no evidence either way
    other = true + rng.normal(0, 1.2, groups.size)
    tie = bs.paired_bootstrap("srcc", true, worse, other, groups, seed=0, method="percentile")
    assert tie.low < 0 < tie.high or tie.p_value > 0.05
    # the CI excludes 0 exactly when p < 1 - confidence (percentile interval)
    assert (res.low > 0 or res.high < 0) == (res.p_value < 0.05)


def test_bootstrap_handles_few_groups_and_names_bad_input() -> None:
    one = bs.cluster_bootstrap_ci("srcc", [1.0, 2.0, 3.0], [1.0, 3.0, 2.0], ["a", "a", "a"])
    assert one.estimate == pytest.approx(0.5) and math.isnan(one.low) and one.n_groups == 1
    assert one.too_few_groups
    with pytest.raises(ValueError, match="row 1"):
        bs.cluster_bootstrap_ci("srcc", [1.0, 2.0, 3.0], [1.0, 3.0, 2.0], ["a", None, "b"])
    with pytest.raises(ValueError, match="no bootstrap for metric 'emd'"):
        bs.cluster_bootstrap_ci("emd", [1.0, 2.0], [1.0, 2.0], ["a", "b"])
    with pytest.raises(ValueError, match="method"):
        bs.cluster_bootstrap_ci("srcc", [1.0, 2.0], [1.0, 2.0], ["a", "b"], method="normal")
    assert bs.BootstrapCI(0.7941, 0.7512, 0.8305, 3, 1000, "percentile", 0.95).text() == "0.794 [0.75, 0.83]"


def predictions_table(d: dict[str, np.ndarray], names: list[str]) -> pd.DataFrame:
    n = len(d["idx"])
    return pd.DataFrame(
        {
            "dataset": np.asarray(names)[d["idx"]],
            "image_id": np.arange(n).astype(str),
            "path": [f"{i}.jpg" for i in range(n)],
            "score": d["true"].astype(np.float32).astype(np.float64),
            "label": d["true_cls"],
            "pred_score": d["pred"].astype(np.float32).astype(np.float64),
            "pred_class": d["pred_cls"],
            "group": (np.arange(n) // 4).astype(str),
        }
    )


def test_a_source_with_its_own_thresholds_is_scored_on_them_and_all_on_the_declared_pair() -> None:
    d = make_data(seed=6)
    own = (4.5, 6.5)
    rule = LabelRule((5.0, 6.0), {"ava": own, "koniq10k": (5.0, 6.0)})
    assert rule.overridden == ["ava"] and rule.key == "5_6; ava=4.5_6.5"
    # what the mixture and the head produce: truth at the source's pair, prediction at the declared pair
    true_cls = d["true_cls"].copy()
    ava = d["idx"] == 0
    true_cls[ava] = assign_labels(d["true"][ava].astype(np.float32).astype(np.float64), *own)
    d = {**d, "true_cls": true_cls, "pred_cls": assign_labels(d["pred"].astype(np.float32), 5.0, 6.0)}
    m = GroupedQualityMetrics(NAMES, label_rule=rule)
    feed(m, d, dist=False)
    got = m.compute()
    p32 = d["pred"].astype(np.float32).astype(np.float64)
    t32 = d["true"].astype(np.float32).astype(np.float64)
    want_ava = accuracy_score(true_cls[ava], assign_labels(p32[ava], *own))
    assert got["ava/acc"] == pytest.approx(want_ava)
    want_all = accuracy_score(assign_labels(t32, 5.0, 6.0), assign_labels(p32, 5.0, 6.0))
    assert got["all/acc"] == pytest.approx(want_all)
    assert got["all/macro_f1"] == pytest.approx(
        f1_score(assign_labels(t32, 5, 6), assign_labels(p32, 5, 6), average="macro")
    )
    # the predictions table carries both views, and the bootstrap's estimates follow the same rule
    table = rule.add_columns(predictions_table(d, NAMES))
    for ds in [*NAMES, "all"]:
        cis = bs.bootstrap_metrics(bs.EvalRows.from_predictions(table, ds), list(bs.METRICS), n_resamples=50)
        for name, ci in cis.items():
            assert ci.estimate == pytest.approx(got[f"{ds}/{name}"], abs=1e-6), f"{ds}/{name}"
    with pytest.raises(LabelRuleError, match=r"classification head.*data.sources.ava.thresholds=null"):
        GroupedQualityMetrics(NAMES, common_scale_score=False, label_rule=rule)
    # without overrides the rule changes nothing
    plain = LabelRule((5.0, 6.0), {"ava": (5.0, 6.0)})
    assert plain.overridden == [] and plain.key == "5_6"
    GroupedQualityMetrics(NAMES, common_scale_score=False, label_rule=plain)
