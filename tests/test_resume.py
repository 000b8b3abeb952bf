"""Kill a real `iqs train` with SIGKILL mid-epoch, resume it, and get the uninterrupted run's test metrics."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import seed_store
from iqs.core.config import compose

ROOT = Path(__file__).resolve().parents[1]

# the killed process: sleeps in the second batch of epoch 1, after epoch 0 wrote last.ckpt, and says so
KILLED_JOB = """
import sys, time
from pathlib import Path
from iqs.train.module import QualityLitModule

marker = Path(sys.argv[1])
step = QualityLitModule.training_step

def slow_step(self, batch, batch_idx):
    if self.current_epoch == 1 and batch_idx == 1:
        marker.write_text("in epoch 1")
        time.sleep(600)
    return step(self, batch, batch_idx)

QualityLitModule.training_step = slow_step
from iqs.cli import main
sys.exit(main(["train", *sys.argv[2:]]))
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    for var in (
        "MLFLOW_TRACKING_URI",
        "IQS_SWEEP_ID",
        "IQS_CACHE_DIR",
        "IQS_DATA_DIR",
        "SLURM_RESTART_COUNT",
    ):
        monkeypatch.delenv(var, raising=False)


def tiny(root: Path, demo: Path, *extra: str, epochs: int = 3) -> list[str]:
    """A demo run of `epochs` epochs on 64 px images and cached features, one thread (bitwise repeatable);
    the test CIs and decision cuts are off (they do not bear on these tests)."""
    from test_train import demo_sources, tiny_run

    return [
        "experiment=demo",
        *demo_sources(demo),
        f"paths.root_dir={root}",
        *tiny_run(epochs),
        "num_threads=1",
        "logger.test_ci.enabled=false",
        "decision_cuts.enabled=false",
        *extra,
    ]


def runs_of(root: Path, experiment: str):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_metrics(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if k.startswith("test/")}


test_metrics.__test__ = False  # a helper, not a test


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tiny_demo, tmp_path, migrated_db):
    from mlflow import MlflowClient

    from iqs.train.run import main, train

    seed_store(tmp_path, migrated_db)

    # the uninterrupted run (also fills the feature cache the other two hit)
    whole, _ = train(
        compose(
            "train", tiny(tmp_path, tiny_demo, "logger.experiment_name=whole", f"output_dir={tmp_path}/whole")
        )
    )

    ov = tiny(tmp_path, tiny_demo, "logger.experiment_name=killed", "hydra/job_logging=disabled")
    marker = tmp_path / "in-epoch-1"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_JOB, str(marker), *ov], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert proc.poll() is None, "the training process ended before epoch 1"
            assert time.monotonic() < deadline, "the training process never reached epoch 1"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (killed,) = runs_of(tmp_path, "killed")
    assert killed.info.status == "RUNNING"  # nobody could end it
    last = Path(killed.data.tags["output_dir"]) / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)  # still loads without pickled objects
    assert saved["epoch"] == 0 and saved["iqs_resume"]["run_id"] == killed.info.run_id

    assert main([*ov, "resume=auto"]) == 0
    (resumed,) = runs_of(tmp_path, "killed")  # the same single run, continued
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags["iqs.resumes"] == "1"
    # the liveness check's mark moved into the history; no failure tag is left
    assert resumed.data.tags["iqs.resumed_after"].startswith("attempt 1: KILLED (liveness check: pid ")
    assert not {"error", "traceback", "iqs.ended_by"} & set(resumed.data.tags)
    # the killed attempt logged steps of epoch 1 that the resumed one trained again: each step is stored once
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (uninterrupted,) = runs_of(tmp_path, "whole")
    for key in ("val/all/srcc", "train/loss_step"):
        steps = sorted(m.step for m in client.get_metric_history(resumed.info.run_id, key))
        whole_steps = sorted(m.step for m in client.get_metric_history(uninterrupted.info.run_id, key))
        assert steps == whole_steps and len(steps) == len(set(steps)), (key, steps)
    got, expected = test_metrics(resumed), {k: v for k, v in whole.items() if k.startswith("test/")}
    assert got.keys() >= {"test/all/srcc", "test/all/rmse", "test/demo_ava/plcc"}
    for key, value in got.items():
        assert value == pytest.approx(expected[key], abs=1e-6, nan_ok=True), key
    # the resumed job kept writing into the run's own folder
    assert (Path(resumed.data.tags["output_dir"]) / "test_predictions.csv").is_file()
    # each source is one dataset input, logged by the killed attempt and not again on resume
    inputs = [d.dataset.name for d in resumed.inputs.dataset_inputs]
    assert sorted(inputs) == sorted(set(inputs)) and len(inputs) >= 2, inputs


def test_a_failed_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    """A full disk in the middle of writing last.ckpt: the old file stays, no torn or temporary file is left."""
    import builtins
    import errno

    from iqs.train import checkpoint_io

    io = checkpoint_io.AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 0, "w": torch.arange(10)}, path)
    before = path.read_bytes()

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(
        checkpoint_io,
        "open",
        lambda p, mode: FullDisk(builtins.open(p, mode)),  # noqa: SIM115
        raising=False,
    )
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 1, "w": torch.arange(100_000)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["epoch"] == 0


@pytest.mark.slow
def test_resume_is_the_one_key_and_bad_targets_say_what_to_do(tmp_path, migrated_db):
    from mlflow import MlflowClient

    from iqs.core.config import CommandLineError
    from iqs.data.mixture import ConfigError
    from iqs.train.resume import auto_target, from_run, resume_value

    with pytest.raises(CommandLineError, match="unknown key 'ckpt_path'"):
        compose("train", ["ckpt_path=x.ckpt"])
    with pytest.raises(ConfigError, match="resume="):
        resume_value(compose("train", ["+ckpt_path=x.ckpt"]))
    assert resume_value(compose("train", [])) is None
    assert resume_value(compose("train", ["resume=auto"])) == "auto"

    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("r", artifact_location=(tmp_path / "a").as_uri())
    with pytest.raises(ConfigError, match="no such MLflow run"):
        from_run(client, "0" * 32)
    done = client.create_run(exp, run_name="regression-none-t5_6-demo")
    client.set_tag(done.info.run_id, "output_dir", str(tmp_path))
    client.set_terminated(done.info.run_id, "FINISHED")
    with pytest.raises(ConfigError, match="FINISHED: there is nothing to resume"):
        from_run(client, done.info.run_id)
    killed = client.create_run(exp, run_name="regression-none-t5_6-demo")
    client.set_tag(killed.info.run_id, "output_dir", str(tmp_path / "killed"))
    client.set_terminated(killed.info.run_id, "KILLED")
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        from_run(client, killed.info.run_id)
    with pytest.raises(ConfigError, match="resume=auto: no unfinished run"):
        auto_target(client, exp, "regression-none-t5_6-demo", {})
    (tmp_path / "killed" / "checkpoints").mkdir(parents=True)
    (tmp_path / "killed" / "checkpoints" / "last.ckpt").write_bytes(b"")
    found = auto_target(client, exp, "regression-none-t5_6-demo", {})
    assert found.run_id == killed.info.run_id and found.checkpoint.name == "last.ckpt"
    client.log_param(killed.info.run_id, "head.name", "distribution")  # another config: not this one's run
    with pytest.raises(ConfigError, match="resume=auto"):
        auto_target(client, exp, "regression-none-t5_6-demo", {"head.name": "regression"})


@pytest.mark.slow
def test_resume_auto_finds_a_run_whose_long_param_was_logged_truncated(tmp_path, migrated_db):
    """MLflow keeps at most MAX_PARAM_VALUE characters of a param: such a value was logged cut short, and
    resume=auto must not take it for another config (mlflow_run._reopen skips it the same way)."""
    from mlflow import MlflowClient

    from iqs.data.mixture import ConfigError
    from iqs.tracking.mlflow_run import MAX_PARAM_VALUE, TrackedRun, changed_params
    from iqs.train.resume import auto_target

    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("r", artifact_location=(tmp_path / "a").as_uri())
    run = client.create_run(exp, run_name="regression-none-t5_6-demo")
    long = "x" * (MAX_PARAM_VALUE + 50)
    TrackedRun(client, run, "r", "none", None).log_params_flat({"data": {"list": long}, "seed": 1})
    client.set_tag(run.info.run_id, "output_dir", str(tmp_path / "run"))
    client.set_terminated(run.info.run_id, "KILLED")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"")
    params = {"data.list": long, "seed": "1"}
    assert client.get_run(run.info.run_id).data.params["data.list"] != long  # logged cut short
    assert auto_target(client, exp, "regression-none-t5_6-demo", params).run_id == run.info.run_id
    assert changed_params(client.get_run(run.info.run_id).data.params, {**params, "seed": "2"}) == {
        "seed": ("1", "2")
    }
    with pytest.raises(ConfigError, match="resume=auto"):
        auto_target(client, exp, "regression-none-t5_6-demo", {**params, "seed": "2"})


def test_last_ckpt_is_written_every_epoch_apart_from_the_best(tmp_path):
    """The monitored value never improves after epoch 0: last.ckpt still holds every epoch (Lightning's own
    save_last would stay at epoch 0), the best stays in its own file, and a resume starts at the next epoch."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from iqs.train.build import callbacks as make_callbacks
    from iqs.train.trainer_setup import trainer_plugins

    class Flat(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.epochs_run: list[int] = []

        def on_train_epoch_start(self) -> None:
            self.epochs_run.append(self.current_epoch)

        def training_step(self, batch, batch_idx):
            return (self.w - batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val/all/srcc", 0.5)  # the same every epoch: the best is epoch 0

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.ones(8, 1)), batch_size=4)

        val_dataloader = train_dataloader

    def fit(epochs: int, ckpt_path: Path | None = None) -> Flat:
        cfg = compose(
            "train", ["callbacks.early_stopping.enabled=false", "trainer.enable_progress_bar=false"]
        )
        callbacks = make_callbacks(cfg, tmp_path)
        callbacks.pop("lr")  # it needs a logger; none here
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            callbacks=list(callbacks.values()),
            plugins=trainer_plugins(),
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
        )
        module = Flat()
        trainer.fit(module, ckpt_path=ckpt_path)
        return module

    fit(3)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]
    last = torch.load(folder / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 6)
    assert torch.load(folder / "best-epoch000.ckpt", weights_only=False)["epoch"] == 0
    assert fit(4, folder / "last.ckpt").epochs_run == [3]  # continues after the last finished epoch


@pytest.mark.slow
def test_a_resumed_run_sheds_the_failure_marks_of_its_earlier_attempts(tmp_path, migrated_db):
    """disk full -> FAILED (error, traceback tags, traceback.txt), then killed (ended by the liveness check):
    each resume moves the marks into `iqs.resumed_after` and attempts/<n>/traceback.txt."""
    from mlflow import MlflowClient

    from iqs.tracking.experiment import experiment_of
    from iqs.tracking.mlflow_run import open_run

    seed_store(tmp_path, migrated_db)
    cfg = compose("train", [f"paths.root_dir={tmp_path}", "logger.experiment_name=resumed"])
    client, experiment_id, _ = experiment_of(cfg)
    run_id = client.create_run(experiment_id, run_name="r").info.run_id
    client.log_text(run_id, "Traceback ...\nOSError: [Errno 28] No space left on device", "traceback.txt")
    client.set_tag(run_id, "error", "OSError: [Errno 28] No space left on device")
    client.set_tag(run_id, "traceback", "Traceback ...")
    client.set_terminated(run_id, "FAILED")

    open_run(cfg, resume_run_id=run_id).end("KILLED")
    client.set_tag(run_id, "iqs.ended_by", "liveness check: pid 123 on host is gone")
    run = open_run(cfg, resume_run_id=run_id)
    run.end("FINISHED")

    done = MlflowClient(run.tracking_uri).get_run(run_id)
    assert done.info.status == "FINISHED"
    assert not {"error", "traceback", "iqs.ended_by"} & set(done.data.tags)
    assert done.data.tags["iqs.resumes"] == "2"
    assert done.data.tags["iqs.resumed_after"] == (
        "attempt 1: FAILED (OSError: [Errno 28] No space left on device); "
        "attempt 2: KILLED (liveness check: pid 123 on host is gone)"
    )
    top = {a.path for a in client.list_artifacts(run_id)}
    assert "traceback.txt" not in top and "attempts" in top
    moved = client.download_artifacts(run_id, "attempts/1/traceback.txt", str(tmp_path))
    assert "No space left" in Path(moved).read_text()
