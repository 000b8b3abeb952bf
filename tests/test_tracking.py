from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from omegaconf import OmegaConf
from scipy import stats
from sklearn.metrics import confusion_matrix

from conftest import sqlite_logger
from iqs.core.config import compose
from iqs.core.scale import assign_labels
from iqs.data.table import fingerprint
from iqs.metrics.label_rule import LabelRule, class_columns
from iqs.report.artifacts import PREDICTION_COLUMNS, log_test_artifacts
from iqs.report.plots import confusion_figure, confusion_from_labels, scatter_figure
from iqs.tracking import axes_of, flatten_config, make_lightning_logger, run_name_for, tracked_run

T1, T2 = 5.0, 6.0
SOURCES = ("demo_ava", "demo_koniq")
KONIQ_PAIR = (4.0, 7.0)  # demo_koniq's own thresholds in make_cfg
RULE = LabelRule((T1, T2), {"demo_ava": (T1, T2), "demo_koniq": KONIQ_PAIR})


@pytest.fixture
def store(tmp_path: Path, migrated_db: Path) -> Path:
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    return tmp_path


def make_cfg(tmp_path: Path, **logger) -> OmegaConf:
    return OmegaConf.create(
        {
            "paths": {"mlruns_dir": str(tmp_path / "mlruns")},
            "logger": sqlite_logger(tmp_path, "unit", **{"sweep_id": "sweep-a", **logger}),
            "head": {"name": "regression", "sharpness": 4.0},
            "rebalance": {"name": "sampler", "power": 0.5},
            "thresholds": {"name": "5_6", "t1": T1, "t2": T2},
            "backbone": {
                "name": "tf_efficientnet_lite0",
                "input_size": [224, 224],
                "mean": [0.5] * 3,
                "std": [0.25] * 3,
            },
            "data": {
                "name": "demo",
                "seed": 0,
                "sources": {
                    "demo_ava": {
                        "weight": 1.0,
                        "thresholds": None,
                        "keep_classes": None,
                        "root": str(tmp_path / "ava"),
                        "annotations": "AVA.txt",
                    },
                    "demo_koniq": {"weight": 0.5, "thresholds": {"t1": 4.0, "t2": 7.0}, "keep_classes": [0]},
                },
            },
            # enough keys to need several params batches (MLflow takes 100 per call)
            "extra": {f"k{i:03d}": i for i in range(140)},
            "long": "x" * 7000,
        }
    )


def fake_table(seed: int = 0, n: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    score = rng.uniform(1, 10, n)
    return pd.DataFrame(
        {
            "dataset": np.repeat(SOURCES, n // 2),
            "image_id": [f"img{i:04d}" for i in range(n)],
            "path": [f"images/img{i:04d}.jpg" for i in range(n)],
            "score": score,
            # each source labelled with its own pair, as the mixture does
            "label": np.where(
                np.arange(n) < n // 2, assign_labels(score, T1, T2), assign_labels(score, *KONIQ_PAIR)
            ),
            "split": rng.choice(["train", "val", "test"], n, p=[0.6, 0.2, 0.2]),
            "group": [f"photo{i // 4:03d}" for i in range(n)],  # 4 crops per photograph
        }
    )


def fake_predictions(table: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    test = table[table["split"] == "test"].reset_index(drop=True)
    pred = np.clip(test["score"] + rng.normal(0, 1.0, len(test)), 1, 10)
    probs = rng.dirichlet(np.ones(3), len(test))
    out = test[["dataset", "image_id", "path", "score", "label"]].copy()
    out["pred_score"] = pred
    out["pred_class"] = np.digitize(pred, [T1, T2], right=True)
    out[["prob_bad", "prob_normal", "prob_good"]] = probs
    return out[PREDICTION_COLUMNS]


def fake_metrics(pred: pd.DataFrame) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    metrics, confusion = {}, {}
    ruled = RULE.add_columns(pred)
    for ds, part in [*ruled.groupby("dataset"), ("all", ruled)]:
        metrics[f"test/{ds}/plcc"] = float(stats.pearsonr(part["score"], part["pred_score"]).statistic)
        metrics[f"test/{ds}/srcc"] = float(stats.spearmanr(part["score"], part["pred_score"]).statistic)
        true_col, pred_col = class_columns(ds, part.columns)
        confusion[ds] = confusion_matrix(part[true_col], part[pred_col], labels=[0, 1, 2])
    return metrics, confusion


def all_artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for info in client.list_artifacts(run_id, path):
        out |= all_artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return out


@pytest.mark.slow
def test_tracked_run_logs_params_tags_metrics_and_artifacts(store: Path) -> None:
    tmp_path = store
    cfg = make_cfg(tmp_path)
    table = fake_table()
    pred = fake_predictions(table)
    metrics, confusion = fake_metrics(pred)
    ckpt = tmp_path / "best.ckpt"
    meta = {"input_size": [256, 256], "mean": [0.1, 0.2, 0.3], "std": [0.9, 0.8, 0.7], "thresholds": [T1, T2]}
    torch.save({"state_dict": {"w": torch.zeros(2)}, "iqs_meta": meta}, ckpt)

    with tracked_run(cfg, tags={"purpose": "unit"}) as run:
        run.log_mixture(table)
        run.log_metrics({"val/all/srcc": 0.5}, step=3)
        run.log_metrics({"test/demo_ava/plcc": metrics["test/demo_ava/plcc"]})
        log_test_artifacts(
            run, pred, metrics, confusion, table, (T1, T2), dict(RULE.per_source), cfg, str(ckpt)
        )
        run_id = run.run_id

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == run_name_for(cfg) == "regression-sampler-t5_6-demo"
    assert got.info.artifact_uri.startswith((tmp_path / "artifacts" / "unit").as_uri())

    flat = flatten_config(cfg)
    assert len(flat) > 150
    assert got.data.params == {k: (v if len(v) <= 6000 else got.data.params[k]) for k, v in flat.items()}
    assert got.data.params["data.sources.demo_koniq.keep_classes"] == "[0]"
    assert got.data.params["backbone.input_size"] == "[224, 224]"
    assert got.data.params["long"].endswith("<truncated>") and len(got.data.params["long"]) <= 6000

    tags = got.data.tags
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    if head.returncode == 0:
        assert tags["git_commit"] == head.stdout.strip()
        assert tags["git_dirty"] in ("true", "false")
    assert tags["fingerprint"] == fingerprint(table)
    assert tags["sweep_id"] == "sweep-a" and tags["purpose"] == "unit"
    assert (tags["head"], tags["rebalance"], tags["thresholds"], tags["data"]) == (
        "regression",
        "sampler",
        "5_6",
        "demo",
    )

    for key, value in metrics.items():
        assert got.data.metrics[key] == pytest.approx(value)
    assert [m.step for m in client.get_metric_history(run_id, "val/all/srcc")] == [3]
    # already logged before log_test_artifacts: not logged a second time
    assert len(client.get_metric_history(run_id, "test/demo_ava/plcc")) == 1

    datasets = [*SOURCES, "all"]
    expected = {
        "config.yaml",
        "data/counts.csv",
        "model_card.md",
        "predictions/test_predictions.csv",
        "metrics/test_ci.csv",
        "checkpoints/best.ckpt",
        *(f"plots/label_hist_train_{s}.png" for s in SOURCES),
        *(f"plots/confusion_{d}.png" for d in datasets),
        *(f"plots/scatter_{d}.png" for d in datasets),
    }
    listed = all_artifacts(client, run_id)
    assert expected <= listed, expected - listed

    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "dl")))
    for png in sorted(p for p in expected if p.endswith(".png")):
        img = mpimg.imread(local / png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    back = pd.read_csv(local / "predictions/test_predictions.csv", dtype={"image_id": str, "group": str})
    pd.testing.assert_frame_equal(back[pred.columns], pred, check_exact=False, rtol=1e-5, check_dtype=False)
    # each row's photograph, and the label rule's views: demo_koniq judged on its own pair, `all` on 5/6
    assert list(back["group"]) == list(pred.merge(table, on=["dataset", "image_id"])["group"])
    koniq = back["dataset"] == "demo_koniq"
    np.testing.assert_array_equal(
        back.loc[koniq, "pred_class_source"], assign_labels(pred.loc[koniq, "pred_score"], *KONIQ_PAIR)
    )
    np.testing.assert_array_equal(back["label_declared"], assign_labels(pred["score"], T1, T2))
    np.testing.assert_array_equal(back.loc[~koniq, "pred_class_source"], pred.loc[~koniq, "pred_class"])

    # cluster-bootstrap CIs of every metric per dataset, over the photographs of the test split
    ci = pd.read_csv(local / "metrics/test_ci.csv")
    assert set(ci["dataset"]) == set(datasets) and set(ci["metric"]) >= {"srcc", "plcc", "acc", "macro_f1"}
    for ds in datasets:
        part = pred if ds == "all" else pred[pred["dataset"] == ds]
        n_groups = part.merge(table, on=["dataset", "image_id"])["group"].nunique()
        assert got.data.metrics[f"test/{ds}/n_groups"] == n_groups
        for m in ("srcc", "plcc", "acc", "f1_good"):
            lo, hi = got.data.metrics[f"test/{ds}/{m}_lo"], got.data.metrics[f"test/{ds}/{m}_hi"]
            row = ci[(ci["dataset"] == ds) & (ci["metric"] == m)].iloc[0]
            assert lo == pytest.approx(row["low"], rel=1e-5) and lo <= row["estimate"] <= hi, (ds, m)
        assert ci.set_index(["dataset", "metric"]).loc[(ds, "srcc"), "estimate"] == pytest.approx(
            metrics[f"test/{ds}/srcc"], rel=1e-5
        )
    assert OmegaConf.to_container(OmegaConf.load(local / "config.yaml")) == OmegaConf.to_container(
        cfg, resolve=True
    )
    counts = pd.read_csv(local / "data/counts.csv")
    assert counts["n"].sum() == len(table)
    assert torch.load(local / "checkpoints/best.ckpt", weights_only=True)["iqs_meta"] == meta

    card = (local / "model_card.md").read_text()
    train = table[table["split"] == "train"]
    for source in SOURCES:
        n_train = int((train["dataset"] == source).sum())
        assert f"| {source} |" in card and f"| {n_train} |" in card
    assert "| 4 / 7 |" in card and "| 5 / 6 |" in card  # per-source thresholds
    assert f"{metrics['test/all/srcc']:.4g}" in card
    assert "256x256" in card and "0.9" in card  # I/O contract read from the checkpoint's iqs_meta
    assert "iqs train" in card and tags["git_commit"] in card

    # each source is a dataset input of the run: name, the fingerprint of its rows, its annotation file
    inputs = {d.dataset.name: d for d in got.inputs.dataset_inputs}
    assert set(inputs) == set(SOURCES)
    for source in SOURCES:
        assert inputs[source].dataset.digest == fingerprint(table[table["dataset"] == source])
        assert [(t.key, t.value) for t in inputs[source].tags] == [("mlflow.data.context", "mixture")]
    assert str(tmp_path / "ava" / "AVA.txt") in inputs["demo_ava"].dataset.source
    found = client.search_runs([got.info.experiment_id], "datasets.name = 'demo_koniq'")
    assert [r.info.run_id for r in found] == [run_id]
    # the experiment opens on the training-runs table in MLflow 3's UI, not the GenAI view
    assert client.get_experiment(got.info.experiment_id).tags["mlflow.experimentKind"] == (
        "custom_model_development"
    )


def test_an_existing_experiment_gets_its_kind_unless_one_is_set(store: Path) -> None:
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    plain = client.create_experiment("unit", artifact_location=(store / "a").as_uri())
    genai = client.create_experiment(
        "mine", artifact_location=(store / "b").as_uri(), tags={"mlflow.experimentKind": "genai_development"}
    )
    with tracked_run(make_cfg(store)):
        pass
    with tracked_run(make_cfg(store, experiment_name="mine")):
        pass
    assert client.get_experiment(plain).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(genai).tags["mlflow.experimentKind"] == "genai_development"


def test_threshold_tags_and_run_names_come_from_the_values() -> None:
    """`thresholds.t1=4 thresholds.t2=7` on top of the 5_6 group is 4_7 everywhere (issue 12)."""
    cfg = compose("train", ["thresholds.t1=4", "thresholds.t2=7"])
    assert cfg.thresholds.name == "5_6"
    axes = axes_of(cfg)
    assert axes["thresholds"] == "4_7" and axes["labels"] == "4_7"
    assert run_name_for(cfg) == "regression-none-t4_7-demo"
    own = compose("train", ["thresholds=t4.5_6.5", "data.sources.demo_ava.thresholds={t1: 4, t2: 7}"])
    assert axes_of(own)["thresholds"] == "4.5_6.5"
    assert axes_of(own)["labels"] == "4.5_6.5; demo_ava=4_7"  # runs with other labels are told apart


@pytest.mark.slow
def test_failing_run_ends_failed_with_traceback(store: Path) -> None:
    tmp_path = store
    cfg = make_cfg(tmp_path)
    with pytest.raises(RuntimeError, match="exploded at epoch 3"), tracked_run(cfg) as run:
        run.log_metrics({"train/loss": 1.0})
        raise RuntimeError("loss exploded at epoch 3")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    got = client.get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["error"] == "RuntimeError: loss exploded at epoch 3"
    assert "exploded at epoch 3" in got.data.tags["traceback"]
    text = Path(client.download_artifacts(run.run_id, "traceback.txt", str(tmp_path))).read_text()
    assert "Traceback" in text and "RuntimeError: loss exploded at epoch 3" in text


def test_tracking_uri_env_and_override_precedence(
    tmp_path: Path, migrated_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_db = tmp_path / "env" / "store.db"
    env_db.parent.mkdir()
    shutil.copy(migrated_db, env_db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{env_db}")
    composed = compose("compare")
    assert composed.logger.tracking_uri == f"sqlite:///{env_db}"
    explicit = compose("compare", [f"logger.tracking_uri=sqlite:///{tmp_path}/explicit.db"])
    assert explicit.logger.tracking_uri == f"sqlite:///{tmp_path}/explicit.db"

    cfg = make_cfg(tmp_path)
    del cfg.logger["tracking_uri"]
    with tracked_run(cfg) as run:
        run.log_metrics({"test/all/srcc": 0.25})
    assert env_db.is_file()
    assert MlflowClient(f"sqlite:///{env_db}").get_run(run.run_id).data.metrics["test/all/srcc"] == 0.25


@pytest.mark.slow
def test_default_store_is_created_under_mlruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = compose("compare")  # the real logger/paths configs
    assert cfg.logger.tracking_uri == "sqlite:///./mlruns/mlflow.db"
    with tracked_run(cfg) as run:
        pass
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert run.artifact_uri.startswith((tmp_path / "mlruns" / "artifacts" / "iqs-digikam").as_uri())
    assert not (tmp_path / "mlartifacts").exists()


def test_lightning_logger_writes_into_the_run_and_leaves_its_status(store: Path) -> None:
    tmp_path = store
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)
            self.save_hyperparameters({"lr": 0.1, "head": {"name": "clash"}})

        def training_step(self, batch, _):
            loss = torch.nn.functional.mse_loss(self.lin(batch[0]), batch[1])
            self.log("train/all/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.randn(8, 1))
    cfg = make_cfg(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    with tracked_run(cfg) as run:
        logger = make_lightning_logger(run)
        assert logger.run_id == run.run_id and logger.experiment_id == run.experiment_id
        trainer = pl.Trainer(
            max_steps=2, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        )  # fmt: skip
        trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))
        assert client.get_run(run.run_id).info.status == "RUNNING"  # Lightning did not end it
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert len(client.get_metric_history(run.run_id, "train/all/loss")) == 2
    assert got.data.params["head.name"] == "regression"  # the module's hparams did not clash


def test_confusion_figure_draws_sklearns_matrix() -> None:
    rng = np.random.default_rng(7)
    y_true, y_pred = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    reference = confusion_matrix(y_true, y_pred, labels=[0, 1, 2])
    cm = confusion_from_labels(y_true, y_pred)
    np.testing.assert_array_equal(cm, reference)
    fig = confusion_figure(cm, "random")
    counts_ax, rates_ax = fig.axes[:2]
    np.testing.assert_array_equal(np.asarray(counts_ax.images[0].get_array()), reference)
    normalised = confusion_matrix(y_true, y_pred, labels=[0, 1, 2], normalize="true")
    np.testing.assert_allclose(np.asarray(rates_ax.images[0].get_array()), normalised)
    texts = sorted(int(t.get_text()) for t in counts_ax.texts)
    assert texts == sorted(reference.ravel().tolist())
    assert [t.get_text() for t in counts_ax.get_xticklabels()] == ["bad", "normal", "good"]
    with pytest.raises(ValueError, match="shape"):
        confusion_figure(np.zeros((2, 2)), "wrong")


def test_scatter_title_has_scipy_correlations() -> None:
    rng = np.random.default_rng(3)
    true = rng.uniform(1, 10, 300)
    pred = true + rng.normal(0, 2, 300)
    fig = scatter_figure(true, pred, (T1, T2), "demo")
    title = fig.axes[0].get_title()
    assert f"PLCC {stats.pearsonr(true, pred).statistic:.3f}" in title
    assert f"SRCC {stats.spearmanr(true, pred).statistic:.3f}" in title


def test_flatten_config_and_run_name() -> None:
    cfg = OmegaConf.create(
        {
            "a": {"b": [1, 2], "c": None, "d": {}},
            "t": "${a.b}",
            "head": {"name": "distribution"},
            "data": {"name": "ava+koniq"},
        }
    )
    assert flatten_config(cfg) == {
        "a.b": "[1, 2]",
        "a.c": "null",
        "a.d": "{}",
        "t": "[1, 2]",
        "head.name": "distribution",
        "data.name": "ava+koniq",
    }
    assert run_name_for(cfg) == "distribution-none-tnone-ava+koniq"
    cfg2 = OmegaConf.create({"thresholds": {"t1": 4.5, "t2": 6.5}, "data": {"name": "my mix/2"}})
    assert run_name_for(cfg2) == "none-none-t4.5_6.5-my_mix_2"


def test_git_info_commit_dirty_and_diff(tmp_path: Path) -> None:
    from iqs.tracking.gitinfo import git_info

    assert git_info(tmp_path) == git_info(tmp_path / "absent")  # not a repository: all unknown
    assert git_info(tmp_path).tags() == {
        "git_commit": "unknown",
        "git_dirty": "unknown",
        "git_branch": "unknown",
    }
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("one\n")
    subprocess.run([*git, "add", "a.txt"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.strip()
    clean = git_info(tmp_path / "sub")
    assert (clean.commit, clean.branch, clean.dirty, clean.diff) == (head, "main", False, "")
    (tmp_path / "a.txt").write_text("two\n")
    (tmp_path / "new.py").write_text("x = 1\n")
    dirty = git_info(tmp_path / "sub")  # from a subfolder: the whole checkout counts
    assert dirty.dirty is True and dirty.tags()["git_dirty"] == "true"
    assert "-one" in dirty.diff and "+two" in dirty.diff and "#   new.py" in dirty.diff


def test_a_dataset_insert_race_is_retried_and_other_errors_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sweep jobs logging the same source at once: MLflow's SQL store raises UNIQUE constraint in
    one of them; the retry then finds the row. Any other error is raised at once."""
    from mlflow.exceptions import MlflowException

    from iqs.tracking import mlflow_run

    calls: list[int] = []

    class Client:
        def __init__(self, error: str) -> None:
            self.error = error

        def log_inputs(self, run_id: str, datasets: list) -> None:
            calls.append(len(datasets))
            if len(calls) == 1:
                raise MlflowException(self.error)

    monkeypatch.setattr("iqs.tracking.run_inputs.dataset_inputs", lambda cfg, table: ["ds"])
    monkeypatch.setattr(mlflow_run.time, "sleep", lambda s: None)
    run = object.__new__(mlflow_run.TrackedRun)
    run.run_id, run.cfg = "r", None
    run.client = Client("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id")
    run.log_sources(pd.DataFrame())
    assert calls == [1, 1]
    calls.clear()
    run.client = Client("database is locked")
    with pytest.raises(MlflowException, match="locked"):
        run.log_sources(pd.DataFrame())
    assert calls == [1]
