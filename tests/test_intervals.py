"""The interval rule (iqs.metrics.interval_rule), the jackknife-t over groups, and a small coverage check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

from iqs.core.scale import assign_labels
from iqs.metrics import bootstrap as bs
from iqs.metrics import coverage, interval_rule
from iqs.metrics.interval_rule import interval_method, min_groups, too_few_text
from iqs.metrics.resample import jackknife_t, jackknife_values

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results.json"


def test_the_rule_gives_no_interval_below_the_minimum_and_one_method_per_size() -> None:
    for metric in bs.METRICS:
        low = min_groups(metric)
        assert interval_method(metric, low - 1) is None and interval_method(metric, 2) is None
        assert interval_method(metric, low) == "jackknife"
        assert interval_method(metric, interval_rule.LARGE) == "percentile"
    assert min_groups("srcc") == 5 and interval_method("srcc", 3) is None
    assert too_few_text(3) == "n=3 groups: too few for an interval; use data.folds=k"
    # a metric the table does not know (a custom one) gets the strictest minimum
    assert min_groups("my_metric") == max(min_groups(m) for m in bs.METRICS)


def test_the_rule_is_what_the_committed_coverage_benchmark_measured() -> None:
    """Each metric's minimum is max(FLOOR, the first simulated size from which the jackknife covers at
    least MIN_COVERAGE at every larger size) in bench/results.json; SRCC and PLCC cover >= 0.93 from 15."""
    block = json.loads(RESULTS.read_text())["coverage_bench"]["results"]
    sizes = interval_rule.SIMULATED_GROUPS
    for metric in bs.METRICS:
        jack = [block[f"ci_coverage_{n}groups"][metric]["jackknife"] for n in sizes]
        covered = [all(c >= interval_rule.MIN_COVERAGE for c in jack[i:]) for i in range(len(sizes))]
        assert any(covered), metric
        assert min_groups(metric) == max(interval_rule.FLOOR, sizes[covered.index(True)]), metric
        for n in sizes:
            key = f"ci_coverage_{n}groups_{metric}"
            method = interval_method(metric, n)
            if method is None:
                assert block[key] == "no interval (too few groups)"
            else:
                assert block[key] == block[f"ci_coverage_{n}groups"][metric][method] >= 0.90, key
                if metric in ("srcc", "plcc") and n >= 15:
                    assert block[key] >= 0.93, key
    # why there is a rule: the percentile bootstrap, the old default, under-covers with few groups
    assert block["ci_coverage_5groups"]["srcc"]["percentile"] < 0.90


def test_jackknife_t_is_leave_one_group_out_on_the_fisher_z_scale() -> None:
    rng = np.random.default_rng(0)
    n_groups = 7
    groups = np.repeat(np.arange(n_groups), 6)
    true = rng.normal(size=n_groups)[groups] + rng.normal(size=groups.size)
    pred = true + rng.normal(size=groups.size)
    # reference: scipy's Spearman on the rows of the other groups, the textbook jackknife SE, t(G-1)
    loo = np.array([stats.spearmanr(true[groups != g], pred[groups != g]).statistic for g in range(n_groups)])
    z = np.arctanh(loo)
    se = math.sqrt((n_groups - 1) / n_groups * ((z - z.mean()) ** 2).sum())
    r = stats.spearmanr(true, pred).statistic
    q = stats.t.ppf(0.975, n_groups - 1)
    got = bs.cluster_bootstrap_ci("srcc", true, pred, groups)
    assert got.method == "jackknife" and got.n_groups == n_groups
    assert (got.low, got.high) == pytest.approx(
        (math.tanh(math.atanh(r) - q * se), math.tanh(math.atanh(r) + q * se))
    )
    values = jackknife_values(lambda w: bs.METRICS["srcc"][1](true, pred, w)[None, :], groups, n_groups)
    assert values[0] == pytest.approx(loo)
    low, high, _ = jackknife_t(np.array([r]), values, ["fisher_z"], 0.95)
    assert (low[0], high[0]) == pytest.approx((got.low, got.high))


def test_too_few_groups_give_no_interval_and_a_flag_in_the_logged_metrics() -> None:
    rng = np.random.default_rng(1)
    rows = []
    for ds, n_photos in (("few", 3), ("many", 12)):
        for g in range(n_photos):
            for i in range(5):
                score = 5.5 + rng.normal()
                rows.append((ds, f"{ds}{g}_{i}", score, score + rng.normal(0, 0.7), f"{ds}:{g}"))
    table = pd.DataFrame(rows, columns=["dataset", "image_id", "score", "pred_score", "group"])
    table["label"] = assign_labels(table["score"], 5.0, 6.0)
    table["pred_class"] = assign_labels(table["pred_score"], 5.0, 6.0)
    intervals = bs.predictions_intervals(table, metrics=["srcc", "plcc", "acc"])
    few = intervals[intervals["dataset"] == "few"]
    assert few["too_few_groups"].all() and few["low"].isna().all() and few["high"].isna().all()
    assert few.loc[few["metric"] == "srcc", "estimate"].item() == pytest.approx(
        stats.spearmanr(table.loc[:14, "score"], table.loc[:14, "pred_score"]).statistic
    )
    logged = bs.interval_metrics(intervals)
    assert logged["test/few/srcc_ci_too_few_groups"] == 1.0 and logged["test/few/n_groups"] == 3.0
    assert "test/few/srcc_lo" not in logged and "test/few/srcc_hi" not in logged
    assert logged["test/many/srcc_lo"] < logged["test/many/srcc_hi"] and logged["test/all/n_groups"] == 15.0
    assert "test/many/srcc_ci_too_few_groups" not in logged
    ci = bs.cluster_bootstrap_ci("srcc", table["score"][:15], table["pred_score"][:15], table["group"][:15])
    assert ci.text() == f"{ci.estimate:.3f} (n=3 groups: too few for an interval; use data.folds=k)"


def test_paired_differences_follow_the_rule() -> None:
    rng = np.random.default_rng(2)
    for n_groups in (3, 8, 40):
        groups = np.repeat(np.arange(n_groups), 5)
        true = rng.normal(size=n_groups)[groups] + rng.normal(size=groups.size)
        a = true + rng.normal(0, 1.2, groups.size)
        b = true + rng.normal(0, 0.8, groups.size)
        res = bs.paired_bootstrap("srcc", true, a, b, groups)
        assert res.delta == pytest.approx(
            stats.spearmanr(true, b).statistic - stats.spearmanr(true, a).statistic
        )
        if n_groups < min_groups("srcc"):
            assert res.too_few_groups and math.isnan(res.low) and math.isnan(res.p_value)
            continue
        assert res.method == "jackknife" and res.low < res.delta < res.high
        # the jackknife's p-value is its interval's own t test: the CI excludes 0 exactly when p < 0.05
        assert (res.low > 0 or res.high < 0) == (res.p_value < 0.05)
    same = bs.paired_bootstrap("srcc", true, a, a, groups)
    assert (same.delta, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_the_simulated_population_values_are_the_metrics_of_a_large_sample() -> None:
    sc = coverage.SCENARIOS[0]
    true, pred, _ = sc.draw(12_000, np.random.default_rng(3))  # ~96k images
    tc, pc = assign_labels(true, *coverage.THRESHOLDS), assign_labels(pred, *coverage.THRESHOLDS)
    pop = sc.population()
    assert pop["plcc"] == pytest.approx(stats.pearsonr(true, pred).statistic, abs=0.01)
    assert pop["srcc"] == pytest.approx(stats.spearmanr(true, pred).statistic, abs=0.01)
    assert pop["rmse"] == pytest.approx(np.sqrt(np.mean((true - pred) ** 2)), abs=0.01)
    assert pop["acc"] == pytest.approx(accuracy_score(tc, pc), abs=0.01)
    assert pop["macro_f1"] == pytest.approx(f1_score(tc, pc, average="macro"), abs=0.01)
    assert pop["binary_acc_5"] == pytest.approx(np.mean((true > 5) == (pred > 5)), abs=0.01)


@pytest.mark.slow
def test_small_coverage_check_the_jackknife_covers_where_the_percentile_bootstrap_does_not() -> None:
    """A few hundred simulated test sets: at 15 photographs the rule's interval covers the population
    SRCC and PLCC about 95% of the time; at 5, the old percentile bootstrap misses far more often."""
    sc = coverage.SCENARIOS[0]
    at15 = coverage.simulate(sc, 15, 150, ["srcc", "plcc"], ["jackknife"]).set_index("metric")
    # 150 test sets: a true 0.95 falls below 0.89 with probability < 1%
    assert (at15["coverage"] >= 0.89).all(), at15
    at5 = coverage.simulate(sc, 5, 150, ["srcc"], ["percentile", "jackknife"], n_resamples=200)
    cov = at5.set_index("method")["coverage"]
    assert cov["percentile"] < 0.88 and cov["jackknife"] >= 0.89
    assert cov["jackknife"] - cov["percentile"] >= 0.08


def test_make_trains_table_prints_n_groups_the_intervals_and_why_one_is_missing(capsys) -> None:
    from iqs.train.run import TABLE_METRICS, print_test_table

    metrics = {}
    for ds, n in (("demo_ava", 3), ("all", 15)):
        metrics[f"test/{ds}/n_groups"] = float(n)
        for i, m in enumerate(TABLE_METRICS):
            metrics[f"test/{ds}/{m}"] = 0.5 + i / 100
    # a run logged before the rule: an interval on 3 groups is not printed
    metrics.update({"test/demo_ava/srcc_lo": 0.41, "test/demo_ava/srcc_hi": 0.93})
    metrics.update({"test/all/srcc_lo": 0.44, "test/all/srcc_hi": 0.62})
    print_test_table(metrics, ["demo_ava"], "test metrics")
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert rows["demo_ava"].split("│")[2].strip() == "3" and rows["all"].split("│")[2].strip() == "15"
    assert "[0.44, 0.62]" in out and "0.41" not in out and "0.93" not in out
    assert out.count("no CI") == len(TABLE_METRICS)  # every metric of demo_ava, none of all
    assert "n=3 groups: too few for an interval; use data.folds=k" in out


def test_small_coverage_check_of_paired_differences() -> None:
    """Model b = model a plus clustered noise: corr(truth, b) = rho / sqrt(1 + s^2) in the population, so
    the true SRCC difference is known; the rule's paired interval covers it about 95% of the time."""
    sc, s, n_groups, reps = coverage.SCENARIOS[0], 0.6, 15, 120
    rho_b = sc.rho / math.sqrt(1 + s * s)
    delta = 6 / math.pi * (math.asin(rho_b / 2) - math.asin(sc.rho / 2))
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(reps):
        true, pred_a, groups = sc.draw(n_groups, rng)
        noise = math.sqrt(sc.icc) * rng.standard_normal(n_groups)[groups]
        noise += math.sqrt(1 - sc.icc) * rng.standard_normal(groups.size)
        pred_b = pred_a + coverage.SCORE_SD * s * noise
        res = bs.paired_bootstrap("srcc", true, pred_a, pred_b, groups)
        assert res.method == "jackknife"
        hits += res.low <= delta <= res.high
    assert hits / reps >= 0.88  # 120 pairs: a true 0.95 falls below 0.88 with probability < 1%
