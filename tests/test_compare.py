from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf
from scipy import stats

from iqs.core.scale import assign_labels
from iqs.metrics.bootstrap import paired_bootstrap
from iqs.metrics.label_rule import LabelRule
from iqs.report.compare import load_config, main, paired_table, search
from iqs.tracking import tracked_run

# (experiment, sweep, head, rebalance, thresholds, lr, all/srcc, status)
RUNS = [
    ("expA", "s1", "regression", "none", "5_6", 1e-3, 0.61, "FINISHED"),
    ("expA", "s1", "regression", "sampler", "5_6", 1e-3, 0.72, "FINISHED"),
    ("expA", "s1", "classification", "none", "5_6", 1e-3, 0.55, "FINISHED"),
    ("expA", "s1", "classification", "sampler", "5_6", 1e-3, 0.68, "FINISHED"),
    ("expA", "s1", "distribution", "none", "5_6", 1e-3, 0.90, "FAILED"),
    ("expB", "s2", "regression", "none", "4.5_6.5", 1e-3, 0.64, "FINISHED"),
    ("expB", "s2", "regression", "none", "4.5_6.5", 1e-4, 0.70, "FINISHED"),
]
T = {"5_6": (5.0, 6.0), "4.5_6.5": (4.5, 6.5)}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> str:
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{shutil.copy(migrated_db, root / 'mlflow.db')}"
    for i, (exp, sweep, head, rebalance, thr, lr, srcc, status) in enumerate(RUNS):
        cfg = OmegaConf.create(
            {
                "paths": {"mlruns_dir": str(root / "mlruns")},
                "logger": {
                    "tracking_uri": uri,
                    "artifact_location": str(root / "art"),
                    "experiment_name": exp,
                },
                "head": {
                    "name": head,
                    "loss": {"regression": "mse", "classification": "ce"}.get(head, "emd"),
                },
                "rebalance": {"name": rebalance},
                "thresholds": {"name": thr, "t1": T[thr][0], "t2": T[thr][1]},
                "data": {"name": "demo", "seed": 0},
                "optim": {"lr": lr, "epochs": 3},
            }
        )
        metrics = {
            "test/all/srcc": srcc,
            "test/all/srcc_lo": srcc - 0.04,
            "test/all/srcc_hi": srcc + 0.03,
            "test/all/n_groups": 12,
            "test/all/plcc": srcc + 0.01,
            "test/all/macro_f1": 0.5 + i / 100,
            "test/demo_ava/plcc": srcc - 0.1,
            "test/demo_ava/srcc": srcc - 0.05,
            "val/all/srcc": srcc + 0.2,
        }
        try:
            with tracked_run(cfg, tags={"sweep_id": sweep}) as run:
                run.log_metrics(metrics)
                if status == "FAILED":
                    raise RuntimeError("diverged")
        except RuntimeError:
            pass
    return uri


def run_csv(store: str, tmp_path: Path, *args: str) -> pd.DataFrame:
    """The wide view as CSV unless args choose another view."""
    out = tmp_path / "cmp.csv"
    view = (
        [] if any(a.startswith(("view=", "baseline=")) for a in args) else ["view=wide", "sort=test/all/srcc"]
    )
    view.insert(
        0, "runs=all"
    )  # every run the filters select (without filters the default is the newest group)
    assert main([f"logger.tracking_uri={store}", "format=csv", f"output={out}", *view, *args]) == 0
    return pd.read_csv(out, dtype={"run_id": str})


def parse_markdown(text: str) -> pd.DataFrame:
    lines = [line for line in text.strip().splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert set(lines[1].replace("|", "")) == {"-"}
    return pd.read_csv(io.StringIO("\n".join(",".join(row) for row in [cells[0], *cells[2:]])))


@pytest.mark.slow
def test_filters_select_the_right_runs(store: str, tmp_path: Path) -> None:
    assert len(run_csv(store, tmp_path)) == 6  # every experiment, FINISHED only
    s1 = run_csv(store, tmp_path, "sweep=s1")
    assert sorted(s1["head"]) == ["classification", "classification", "regression", "regression"]
    assert len(run_csv(store, tmp_path, "sweep=s1", "status=all")) == 5
    failed = run_csv(store, tmp_path, "status=FAILED")
    assert list(failed["head"]) == ["distribution"]
    exp_b = run_csv(store, tmp_path, "experiment=expB")
    assert set(exp_b["thresholds"]) == {"4.5_6.5"} and len(exp_b) == 2
    regression = run_csv(store, tmp_path, "tag.head=regression")
    assert len(regression) == 4 and set(regression["head"]) == {"regression"}
    # a tag value Hydra would read as the integer 56
    t56 = run_csv(store, tmp_path, "tag.thresholds=5_6", "tag.rebalance=sampler")
    assert sorted(t56["head"]) == ["classification", "regression"]


@pytest.mark.slow
def test_sort_order_and_limit(store: str, tmp_path: Path) -> None:
    desc = run_csv(store, tmp_path)
    # runs with other labels (thresholds) form their own block, blocks in the order of their best run
    assert list(desc["labels"]) == ["5_6"] * 4 + ["4.5_6.5"] * 2
    for _, block in desc.groupby("labels", sort=False):
        assert list(block["all/srcc"]) == sorted(block["all/srcc"], reverse=True)
    one_group = run_csv(store, tmp_path, "experiment=expA")
    assert "labels" not in one_group.columns
    assert list(one_group["all/srcc"]) == sorted(one_group["all/srcc"], reverse=True)
    asc = run_csv(store, tmp_path, "experiment=expA", "sort=all/macro_f1", "ascending=true")
    assert list(asc["all/macro_f1"]) == sorted(asc["all/macro_f1"])
    top = run_csv(store, tmp_path, "experiment=expA", "sort=test/demo_ava/plcc", "limit=2")
    assert list(top["demo_ava/plcc"]) == pytest.approx([0.62, 0.58])


@pytest.mark.slow
def test_columns_axes_varying_params_and_metrics(store: str, tmp_path: Path) -> None:
    exp_b = run_csv(store, tmp_path, "experiment=expB")
    assert list(exp_b.columns[:6]) == ["run", "run_id", "head", "rebalance", "thresholds", "data"]
    assert not any(c.endswith(("_lo", "_hi", "n_groups")) for c in run_csv(store, tmp_path, "metrics=all"))
    assert "optim.lr" in exp_b.columns  # swept within the sweep
    assert sorted(exp_b["optim.lr"]) == [1e-4, 1e-3]
    exp_a = run_csv(store, tmp_path, "experiment=expA")
    assert "optim.lr" not in exp_a.columns  # constant there
    assert "head.loss" not in exp_a.columns  # explained by the head axis
    assert "optim.epochs" not in exp_a.columns
    metric_cols = [c for c in exp_a.columns if "/" in c]
    assert metric_cols == ["all/plcc", "all/srcc", "all/macro_f1", "demo_ava/plcc", "demo_ava/srcc"]
    assert not any(c.startswith("val") for c in exp_a.columns)
    srcc_only = run_csv(store, tmp_path, "metrics=[srcc]", "stage=val")
    assert [c for c in srcc_only.columns if "/" in c] == ["all/srcc"]
    assert "experiment" in srcc_only.columns  # several experiments selected
    every = run_csv(store, tmp_path, "metrics=all")
    assert [c for c in every.columns if "/" in c] == [
        "all/macro_f1",
        "all/plcc",
        "all/srcc",
        *metric_cols[3:],
    ]


def test_markdown_and_csv_agree(store: str, tmp_path: Path) -> None:
    csv = run_csv(store, tmp_path, "sweep=s1")
    md_path = tmp_path / "cmp.md"
    assert (
        main(
            [f"logger.tracking_uri={store}", "sweep=s1", "view=wide", "format=markdown", f"output={md_path}"]
        )
        == 0
    )
    md = parse_markdown(md_path.read_text())
    assert list(md.columns) == list(csv.columns)
    assert list(md["run_id"].astype(str)) == list(csv["run_id"].astype(str))
    pd.testing.assert_series_equal(md["all/srcc"], csv["all/srcc"].round(4), check_names=False)


@pytest.mark.slow
def test_table_output_and_errors(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"logger.tracking_uri={store}", "sweep=s2", "view=wide"]) == 0
    out = capsys.readouterr().out
    assert "regression" in out and "optim.lr" in out
    assert main([f"logger.tracking_uri={store}", "experiment=nope"]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err
    assert main([f"logger.tracking_uri={store}", "sort=test/all/nothing"]) == 2
    assert "cannot sort by" in capsys.readouterr().err
    assert main([f"logger.tracking_uri={store}", "metric=nothing"]) == 2
    assert (
        "no selected run logged 'test/<dataset>/nothing'; metrics: macro_f1, plcc" in capsys.readouterr().err
    )
    assert main([f"logger.tracking_uri={store}", "sweep=none-such"]) == 1
    assert main([f"logger.tracking_uri=sqlite:///{tmp_path}/absent.db"]) == 2
    assert not (tmp_path / "absent.db").exists()
    runs = MlflowClient(store).search_runs(
        [e.experiment_id for e in MlflowClient(store).search_experiments()]
    )
    assert len(runs) == len(RUNS)


@pytest.mark.slow
def test_default_view_is_one_metric_with_its_ci_and_fits_a_terminal(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = run_csv(store, tmp_path, "view=metric", "experiment=expA")
    assert list(csv.columns) == [
        "run_id",
        "head",
        "rebalance",
        "all",
        "all_lo",
        "all_hi",
        "all_n_groups",
        "all_too_few",
        "demo_ava",
        "demo_ava_lo",
        "demo_ava_hi",
        "demo_ava_n_groups",
        "demo_ava_too_few",
    ]
    assert list(csv["all"]) == sorted(csv["all"], reverse=True)
    assert list(csv["all_lo"]) == pytest.approx(list(csv["all"] - 0.04))
    assert csv["demo_ava_lo"].isna().all()  # no CI logged: the value alone
    assert main([f"logger.tracking_uri={store}", "experiment=expA"]) == 0
    out = capsys.readouterr().out
    assert "0.720 [0.68, 0.75] n=12" in out  # 0.72 - 0.04, 0.72 + 0.03, on 12 test groups
    assert "interval_rule" in out
    assert max(len(line) for line in out.splitlines()) <= 100
    # another metric, across two label groups: F1 is flagged as not comparable across them
    assert main([f"logger.tracking_uri={store}", "runs=all", "metric=macro_f1", "format=markdown"]) == 0
    md = capsys.readouterr().out
    assert "| labels |" in md.splitlines()[0].replace("| run_id | labels |", "| labels |")
    assert "macro_f1: depend on the label thresholds" in md
    assert main([f"logger.tracking_uri={store}", "runs=all", "metric=srcc", "format=markdown"]) == 0
    assert "depend on the label thresholds" not in capsys.readouterr().out  # SRCC compares across them


def _predictions(seed: int, noise: float, n_photos: int = 24, per: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)  # the same truth for every run
    n = n_photos * per
    score = rng.normal(5.5, 1, n_photos).repeat(per) + rng.normal(0, 0.3, n)
    pred = score + np.random.default_rng(seed).normal(0, noise, n)
    frame = pd.DataFrame(
        {
            "dataset": np.where(np.arange(n) % 2, "demo_ava", "demo_koniq"),
            "image_id": [f"img{i:03d}" for i in range(n)],
            "path": [f"{i}.jpg" for i in range(n)],
            "score": score,
            "label": assign_labels(score, 5, 6),
            "pred_score": pred,
            "pred_class": assign_labels(pred, 5, 6),
            "prob_bad": 1 / 3, "prob_normal": 1 / 3, "prob_good": 1 / 3,
            "group": [f"photo{i // per:02d}" for i in range(n)],
        }
    )  # fmt: skip
    return frame


@pytest.fixture(scope="module")
def paired_store(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> tuple[str, dict[str, str]]:
    root = tmp_path_factory.mktemp("paired")
    uri = f"sqlite:///{shutil.copy(migrated_db, root / 'mlflow.db')}"
    ids = {}
    for name, seed, noise, test_set in (
        ("base", 1, 1.0, "full"),
        ("better", 2, 0.4, "full"),
        ("other", 3, 0.4, "half"),
        ("relabel", 2, 0.4, "relabel"),  # = better, but demo_ava labelled with its own pair 4.5_6.5
    ):
        sources = {"demo_ava": {"thresholds": {"t1": 4.5, "t2": 6.5}}} if name == "relabel" else {}
        cfg = OmegaConf.create(
            {
                "logger": {
                    "tracking_uri": uri,
                    "artifact_location": str(root / "art"),
                    "experiment_name": "pairs",
                },
                "head": {"name": "regression"},
                "thresholds": {"name": "5_6", "t1": 5.0, "t2": 6.0},
                "data": {"name": "demo", "sources": sources},
            }
        )
        pred = _predictions(seed, noise)
        if test_set == "half":
            pred = pred.iloc[: len(pred) // 2]
        rule = LabelRule((5.0, 6.0), {"demo_ava": (4.5, 6.5)} if sources else {})
        ava = pred["dataset"] == "demo_ava"
        pred.loc[ava, "label"] = assign_labels(pred.loc[ava, "score"], *rule.pair("demo_ava"))
        pred = rule.add_columns(pred)
        with tracked_run(cfg, run_name=name, tags={"sweep_id": "p1", "test_set": test_set}) as run:
            csv = root / name / "test_predictions.csv"
            csv.parent.mkdir()
            pred.to_csv(csv, index=False)
            run.log_artifact(csv, "predictions")
            run.log_metrics(
                {"test/all/srcc": float(stats.spearmanr(pred["score"], pred["pred_score"]).statistic)}
            )
            ids[name] = run.run_id
    return uri, ids


@pytest.mark.slow
def test_baseline_gives_paired_deltas_with_ci_and_p_value(
    paired_store: tuple[str, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, ids = paired_store
    out = tmp_path / "pairs.csv"
    args = [f"logger.tracking_uri={uri}", "tag.test_set=full", f"baseline={ids['base'][:8]}"]
    assert main([*args, "format=csv", f"output={out}"]) == 0
    got = pd.read_csv(out).set_index("dataset")
    assert list(got.index) == ["all", "demo_ava", "demo_koniq"] and set(got["run"]) == {"better"}
    base, better = _predictions(1, 1.0), _predictions(2, 0.4)
    for ds in ["all", "demo_ava", "demo_koniq"]:
        part = np.ones(len(base), bool) if ds == "all" else (base["dataset"] == ds).to_numpy()
        want = paired_bootstrap(
            "srcc",
            base["score"][part],
            base["pred_score"][part],
            better["pred_score"][part],
            base["group"][part],
        )
        row = got.loc[ds]
        assert row["delta"] == pytest.approx(want.delta) and row["delta"] > 0
        assert (row["delta_lo"], row["delta_hi"]) == pytest.approx((want.low, want.high))
        assert row["p_value"] == pytest.approx(want.p_value) and row["p_value"] < 0.05
        assert row["n_groups"] == 24
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "paired over the test groups" in text and "better" in text and "n=24" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    # a run tested on other images is refused, saying why
    assert main([f"logger.tracking_uri={uri}", f"baseline={ids['base']}"]) == 2
    err = capsys.readouterr().err
    assert "tested on different images" in err and "60 only in base" in err
    assert main([f"logger.tracking_uri={uri}", "baseline=nope"]) == 2
    assert "not among the 4 selected run(s)" in capsys.readouterr().err


@pytest.mark.slow
def test_html_and_png_plots_with_ci_bars_are_written_and_logged_into_the_sweep(
    paired_store: tuple[str, dict[str, str]], store: str, tmp_path: Path
) -> None:
    uri, ids = paired_store
    png = tmp_path / "cmp.png"
    assert main([f"logger.tracking_uri={store}", "experiment=expA", "format=png", f"output={png}"]) == 0
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 100
    html = tmp_path / "pairs.html"
    args = [f"logger.tracking_uri={uri}", "sweep=p1", "tag.test_set=full", "format=html", f"output={html}"]
    assert main([*args, f"baseline={ids['base']}"]) == 0
    page = html.read_text()
    assert "data:image/png;base64," in page and "<table" in page and "paired over the test" in page
    client = MlflowClient(uri)
    for name in ("base", "better"):
        assert [a.path for a in client.list_artifacts(ids[name], "compare")] == ["compare/pairs.html"]
    assert not client.list_artifacts(ids["other"], "compare")  # not selected


def test_label_metrics_compare_only_where_both_runs_label_alike(
    paired_store: tuple[str, dict[str, str]],
) -> None:
    uri, ids = paired_store
    runs = search(uri, "pairs")
    runs = runs[runs["run_id"].isin([ids["better"], ids["relabel"]])].reset_index(drop=True)
    client = MlflowClient(uri)

    def paired(metric: str) -> pd.DataFrame:
        cfg = load_config([f"logger.tracking_uri={uri}", f"metric={metric}", f"baseline={ids['better']}"])
        return paired_table(runs, cfg, client).set_index("dataset")

    acc = paired("acc")  # the same predictions, labelled alike except demo_ava in `relabel`
    assert acc.loc["all", "delta"] == 0.0 and acc.loc["demo_koniq", "delta"] == 0.0
    assert acc.loc["all", "note"] == ""  # `all` is on the declared pair 5_6 in both runs
    assert acc.loc["demo_ava", "note"].startswith("labels differ (5_6; demo_ava=4.5_6.5 vs 5_6)")
    assert pd.isna(acc.loc["demo_ava", "delta"])
    srcc = paired("srcc")  # does not depend on the labels
    assert (srcc["delta"] == 0.0).all() and (srcc["note"] == "").all()


def test_too_few_groups_show_no_interval_but_the_reason_and_n_groups_everywhere(tmp_path: Path) -> None:
    """Runs as search_runs lists them: one logged before the rule (an interval on 3 groups), one logged
    with the flag, one on 15 groups. Only the last shows an interval; every cell says its n."""
    from iqs.report.compare import build_table, load_config, render
    from iqs.report.compare_render import figure_for, write_figure

    runs = pd.DataFrame(
        {
            "run_id": ["aaaaaaaa1", "bbbbbbbb2", "cccccccc3"],
            "tags.head": ["regression", "distribution", "classification"],
            "metrics.test/all/srcc": [0.688, 0.650, 0.700],
            "metrics.test/all/srcc_lo": [0.659, np.nan, 0.61],
            "metrics.test/all/srcc_hi": [0.800, np.nan, 0.77],
            "metrics.test/all/srcc_ci_too_few_groups": [np.nan, 1.0, np.nan],
            "metrics.test/all/n_groups": [3.0, 3.0, 15.0],
        }
    )
    cfg = load_config(["view=metric", "metric=srcc"])
    table = build_table(runs, cfg)
    assert list(table["all_too_few"]) == [False, True, True]  # sorted: 0.700 first
    assert table["all_lo"].iloc[1:].isna().all() and table["all_lo"].iloc[0] == pytest.approx(0.61)
    md = render(table, "markdown", 3, "t")
    assert "0.700 [0.61, 0.77] n=15" in md and md.count("n=3: no CI") == 2
    assert "0.66" not in md and "0.80" not in md  # the old 3-group interval is not printed
    assert "n=3 groups: too few for an interval; use data.folds=k" in md
    fig = figure_for(table, "t")
    assert any("n=3 groups: too few" in t.get_text() for t in fig.texts)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert sorted(labels) == ["n=15", "n=3: no CI", "n=3: no CI"]
    write_figure(table, "html", "t", tmp_path / "c.html", 3)
    page = (tmp_path / "c.html").read_text()
    assert "n=3 groups: too few for an interval" in page and "n=3: no CI" in page


def test_default_shows_the_newest_group_and_says_which(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No filters: the newest sweep (s2, started last) alone, its title naming it and the way to the rest."""
    out = tmp_path / "default.csv"
    assert main([f"logger.tracking_uri={store}", "format=csv", f"output={out}"]) == 0
    assert len(pd.read_csv(out)) == 2  # s2's two FINISHED runs, not all six
    assert main([f"logger.tracking_uri={store}", "width=160"]) == 0
    text = capsys.readouterr().out
    assert "newest of 2 groups: sweep s2: 2 run(s)" in text and "runs=all" in text
    assert main([f"logger.tracking_uri={store}", "runs=all", "format=csv", f"output={out}"]) == 0
    assert len(pd.read_csv(out)) == 6


@pytest.fixture(scope="module")
def many_params_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sweep of 12 runs that differ in 15 params; only `optim.lr` moves the metric."""
    root = tmp_path_factory.mktemp("many")
    uri = f"sqlite:///{root}/mlflow.db"
    rng = np.random.default_rng(3)
    for i in range(12):
        lr = (1e-3, 1e-4, 3e-4)[i % 3]
        noise = {f"augment.transform_{k:02d}.probability": f"{rng.uniform():.3f}" for k in range(12)}
        cfg = OmegaConf.create(
            {
                "paths": {"mlruns_dir": str(root / "mlruns")},
                "logger": {
                    "tracking_uri": uri,
                    "artifact_location": str(root / "art"),
                    "experiment_name": "e",
                },
                "head": {"name": "regression"},
                "rebalance": {"name": "none"},
                "thresholds": {"name": "5_6", "t1": 5.0, "t2": 6.0},
                "data": {"name": "demo", "seed": int(rng.integers(0, 1000))},
                "optim": {"lr": lr, "weight_decay": float(rng.choice([0.0, 0.01]))},
                **{k.split(".")[0]: {} for k in noise},
            }
        )
        for key, value in noise.items():
            OmegaConf.update(cfg, key, value, force_add=True)
        srcc = {1e-3: 0.70, 1e-4: 0.50, 3e-4: 0.60}[lr] + rng.normal(0, 0.005)
        with tracked_run(cfg, tags={"sweep_id": "wide"}) as run:
            run.log_metrics({"test/all/srcc": srcc, "test/demo_ava/srcc": srcc - 0.05})
    return uri


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.slow
def test_many_varying_params_give_at_most_six_columns_that_fit_the_terminal(
    many_params_store: str,
    columns: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import re
    import shutil
    import sys

    from iqs.report.compare_table import varying_params

    uri = many_params_store
    assert len(varying_params(search(uri, "e"), ["paths.", "logger."])) == 15
    out = tmp_path / "many.csv"
    assert main([f"logger.tracking_uri={uri}", "format=csv", f"output={out}"]) == 0
    table = pd.read_csv(out)
    params = [c for c in table.columns if "." in c]
    assert len(params) == 6 and params[0] == "optim.lr"  # the param that explains the metric leads
    assert main([f"logger.tracking_uri={uri}", "params=all", "format=csv", f"output={out}"]) == 0
    assert len([c for c in pd.read_csv(out).columns if "." in c]) == 15
    # a terminal of `columns` columns: nothing wider, no header or value cut to `…`
    capsys.readouterr()  # the `wrote ...` lines
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=None: os.terminal_size((columns, 40)))
    assert main([f"logger.tracking_uri={uri}"]) == 0
    text = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= columns, "\n".join(
        line for line in lines if len(line) > columns
    )
    header = next(line for line in lines if "run_id" in line)
    assert "…" not in text and "optim.lr" in header
    shown = [w for w in header.split() if "." in w]
    assert 1 <= len(shown) <= 6
    assert "more param(s) vary" in text and "params=all" in text


def test_newest_group_is_a_cv_else_a_sweep_else_the_single_runs_of_one_experiment() -> None:
    from iqs.report.compare_table import newest_group

    t = pd.Timestamp("2026-12-01 10:00")
    runs = pd.DataFrame(
        {
            "run_id": list("abcdefg"),
            "start_time": [
                t,
                t + pd.Timedelta("1h"),
                t + pd.Timedelta("2h"),
                t + pd.Timedelta("3h"),
                t,
                t,
                t,
            ],
            "tags.cv_id": [None, "cv1", "cv1", None, None, None, None],
            "tags.sweep_id": ["none", "s1", "s1", "s2", "s2", "none", "none"],
            "tags.data": ["demo"] * 6 + ["mixture"],
            "experiment": ["e"] * 7,
        }
    )
    picked, scope, groups = newest_group(runs)
    assert (list(picked["run_id"]), scope, groups) == (["d", "e"], "sweep s2", 4)
    picked, scope, _ = newest_group(runs[runs["run_id"] != "d"])
    assert (list(picked["run_id"]), scope) == (["b", "c"], "CV group cv1")  # its sweep id does not split it
    picked, scope, _ = newest_group(runs[runs["run_id"].isin(["a", "f", "g"])])
    assert list(picked["run_id"]) == ["a", "f"] and scope == "runs outside sweeps of experiment e, data demo"
