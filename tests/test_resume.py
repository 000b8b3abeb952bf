"""Kill a real `iqs train` with SIGKILL mid-epoch, resume it, and get the uninterrupted run's test metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from iqs.config import compose

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


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory) -> Path:
    from iqs.data.demo.build import DemoSpec, ensure_demo

    spec = DemoSpec(crops_per_photo=1, long_side=64, types_per_source=1, levels_per_type=2)
    return ensure_demo(tmp_path_factory.mktemp("demo"), 0, spec=spec, progress=False)


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


def tiny(root: Path, demo: Path, *extra: str) -> list[str]:
    """A 3-epoch demo run on 64 px images and cached features, one thread (bitwise repeatable)."""
    return [
        "experiment=demo",
        "data.demo_dir=null",
        *(f"data.sources.demo_{s}.root={demo}/{s}" for s in ("ava", "koniq", "spaq")),
        f"paths.root_dir={root}",
        "backbone.input_size=64",
        "trainer=cpu_fast",
        "trainer.max_epochs=3",
        "trainer.limit_test_batches=1.0",
        "loader.batch_size=16",
        "loader.eval_batch_size=64",
        "cache.batch_size=64",
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
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tiny_demo, tmp_path):
    from iqs.train.run import main, train

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
    got, expected = test_metrics(resumed), {k: v for k, v in whole.items() if k.startswith("test/")}
    assert got.keys() >= {"test/all/srcc", "test/all/rmse", "test/demo_ava/plcc"}
    for key, value in got.items():
        assert value == pytest.approx(expected[key], abs=1e-6, nan_ok=True), key
    # the resumed job kept writing into the run's own folder
    assert (Path(resumed.data.tags["output_dir"]) / "test_predictions.csv").is_file()
