"""The GPU trainer configs and scripts/gpu_check.sh, proven on the CPU (`--cpu --quick`)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iqs.core.config import compose

REPO = Path(__file__).resolve().parents[1]


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(("name", "precision"), [("gpu", "16-mixed"), ("gpu_bf16", "bf16-mixed")])
def test_gpu_trainer_configs_build_a_lightning_trainer(name, precision):
    """Both configs compose and instantiate; only the accelerator is swapped, since this machine has no GPU.

    On the CPU Lightning turns fp16 autocast into bf16 (CPUs have no fp16 AMP); bf16 is kept as configured.
    """
    from hydra.utils import instantiate

    cfg = compose("train", [f"trainer={name}"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == 1
    assert cfg.trainer.precision == precision and cfg.trainer.benchmark is True
    cfg.trainer.accelerator = "cpu"
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.precision == "bf16-mixed"


def test_profile_report_is_read_back(tmp_path):
    """_profile_means reads the report Lightning's SimpleProfiler writes (its only output is that text)."""
    import time

    from pytorch_lightning.profilers import SimpleProfiler

    prof = SimpleProfiler(dirpath=tmp_path, filename="profile")
    prof.setup(stage="fit")
    for _ in range(3):
        with prof.profile("run_training_batch"):
            time.sleep(0.02)
    with prof.profile("[_TrainingEpochLoop].train_dataloader_next"):
        time.sleep(0.01)
    prof.describe()
    means = _gpu_check_module()._profile_means(tmp_path / "fit-profile.txt")
    mean, calls = means["run_training_batch"]
    assert calls == 3 and 0.015 < mean < 0.5
    assert means["[_TrainingEpochLoop].train_dataloader_next"][1] == 1


@pytest.mark.slow  # starts an interpreter that imports torch
def test_gpu_check_refuses_a_missing_gpu_with_the_way_out(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [
        sys.executable,
        str(REPO / "scripts/gpu_check.py"),
        "--out",
        str(tmp_path),
        "--work",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "run with --cpu" in proc.stderr


@pytest.mark.slow
@pytest.mark.gpu_script
def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    """The whole script, --cpu --quick: demo, JPEG shards, bf16 fine-tune through `iqs train`, rates, predict."""
    env = {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "GPU_CHECK_WORK": str(tmp_path / "work"),
        "PYTHONPATH": "",
    }
    cmd = [
        "bash",
        str(REPO / "scripts/gpu_check.sh"),
        "--cpu",
        "--quick",
        "--no-setup",
        "--python",
        sys.executable,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert res["env"]["device"] == "cpu" and res["quick"] is True
    assert "trainer=gpu_bf16" in res["train_overrides"] and "prepare.format=jpeg" in res["train_overrides"]
    assert res["in_run"]["train_batches"] == 3 and res["in_run"]["train_step_ips"] > 0
    assert 0 < res["in_run"]["loader_wait_share"] < 1
    iso = res["isolated"]
    assert iso["prepared_loader_ips"] > 0 and iso["train_step_ips"] > 0
    assert iso["loader_vs_step_ratio"] == pytest.approx(iso["prepared_loader_ips"] / iso["train_step_ips"])
    assert res["model_scoring_ips"] > 0 and res["predict"]["files_per_s"] > 0
    # the training run read the JPEG shards, and predict scored every photo of the folder
    train_log = (tmp_path / "out" / "train.log").read_text()
    assert "prepared jpeg images" in train_log
    rows = (tmp_path / "out" / "predict.csv").read_text().splitlines()
    photos = list((tmp_path / "work" / res["predict"]["folder"]).rglob("*.jpg"))
    assert len(rows) == 1 + len(photos) > 1
