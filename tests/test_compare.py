from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from iqs.tracking import tracked_run
from iqs.tracking.compare import main

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
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root}/mlflow.db"
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
    out = tmp_path / "cmp.csv"
    assert main([f"logger.tracking_uri={store}", "format=csv", f"output={out}", *args]) == 0
    return pd.read_csv(out)


def parse_markdown(text: str) -> pd.DataFrame:
    lines = [line for line in text.strip().splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert set(lines[1].replace("|", "")) == {"-"}
    return pd.read_csv(io.StringIO("\n".join(",".join(row) for row in [cells[0], *cells[2:]])))


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


def test_sort_order_and_limit(store: str, tmp_path: Path) -> None:
    desc = run_csv(store, tmp_path)
    assert list(desc["all/srcc"]) == sorted(desc["all/srcc"], reverse=True)
    asc = run_csv(store, tmp_path, "sort=all/macro_f1", "ascending=true")
    assert list(asc["all/macro_f1"]) == sorted(asc["all/macro_f1"])
    top = run_csv(store, tmp_path, "sort=test/demo_ava/plcc", "limit=2")
    assert list(top["demo_ava/plcc"]) == pytest.approx([0.62, 0.60])


def test_columns_axes_varying_params_and_metrics(store: str, tmp_path: Path) -> None:
    exp_b = run_csv(store, tmp_path, "experiment=expB")
    assert list(exp_b.columns[:6]) == ["run", "run_id", "head", "rebalance", "thresholds", "data"]
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
    assert main([f"logger.tracking_uri={store}", "sweep=s1", "format=markdown", f"output={md_path}"]) == 0
    md = parse_markdown(md_path.read_text())
    assert list(md.columns) == list(csv.columns)
    assert list(md["run_id"].astype(str)) == list(csv["run_id"].astype(str))
    pd.testing.assert_series_equal(md["all/srcc"], csv["all/srcc"].round(4), check_names=False)


def test_table_output_and_errors(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"logger.tracking_uri={store}", "sweep=s2"]) == 0
    out = capsys.readouterr().out
    assert "regression" in out and "optim.lr" in out
    assert main([f"logger.tracking_uri={store}", "experiment=nope"]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err
    assert main([f"logger.tracking_uri={store}", "sort=test/all/nothing"]) == 2
    assert "cannot sort by" in capsys.readouterr().err
    assert main([f"logger.tracking_uri={store}", "sweep=none-such"]) == 1
    assert main([f"logger.tracking_uri=sqlite:///{tmp_path}/absent.db"]) == 2
    assert not (tmp_path / "absent.db").exists()
    runs = MlflowClient(store).search_runs(
        [e.experiment_id for e in MlflowClient(store).search_experiments()]
    )
    assert len(runs) == len(RUNS)
