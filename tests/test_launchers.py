"""Sweeps through Hydra launchers: joblib (parallel local jobs), submitit (SLURM; its local executor here),
the Optuna preset, and each job's share of the cores (iqs.train.launchers)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import seed_store
from iqs.core.config import conf_dir
from iqs.train.launchers import joblib_jobs, optuna_direction, threads_per_job
from test_train import demo_sources

JOBLIB = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"})
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def test_joblib_jobs_split_the_cores_between_them():
    cfg = OmegaConf.create({"num_threads": None})
    assert threads_per_job(cfg, OmegaConf.merge(JOBLIB, {"n_jobs": 2}), cores=8) == 4
    assert threads_per_job(cfg, OmegaConf.merge(JOBLIB, {"n_jobs": 3}), cores=8) == 2
    assert threads_per_job(cfg, OmegaConf.merge(JOBLIB, {"n_jobs": -1}), cores=8) == 1  # a job per core
    assert threads_per_job(cfg, OmegaConf.merge(JOBLIB, {"n_jobs": 16}), cores=8) == 1
    assert joblib_jobs(-2, 8) == 7  # joblib's reading: all cores but one
    with pytest.raises(ValueError, match="n_jobs=0"):
        joblib_jobs(0, 8)


def test_submitit_jobs_use_their_cpus_and_an_explicit_count_wins():
    cfg = OmegaConf.create({"num_threads": None})
    slurm = OmegaConf.create({"_target_": SUBMITIT, "cpus_per_task": 6})
    assert threads_per_job(cfg, slurm, cores=64) == 6
    assert threads_per_job(OmegaConf.create({"num_threads": 3}), slurm, cores=64) == 3
    basic = OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    assert threads_per_job(cfg, basic, cores=64) is None  # one job at a time: torch's default
    assert threads_per_job(cfg) is None  # outside a Hydra job


def compose_with_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import iqs.train.run  # noqa: F401 - registers the resolvers, as `iqs train` does

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_optuna_preset_optimises_the_monitor_metric_in_its_direction():
    cfg = compose_with_hydra(["hparams_search=demo_optuna", "experiment=demo"])
    sweeper = cfg.hydra.sweeper
    assert "OptunaSweeper" in sweeper._target_ and cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.monitor.mode == "max" and sweeper.direction == "maximize"
    assert sweeper.storage is None and {"optimizer.lr", "head.dropout"} <= set(sweeper.params)
    flipped = compose_with_hydra(
        ["hparams_search=demo_optuna", "monitor.metric=val/all/rmse", "monitor.mode=min"]
    )
    assert flipped.hydra.sweeper.direction == "minimize"
    assert optuna_direction("max") == "maximize"
    with pytest.raises(ValueError, match="max or min"):
        optuna_direction("maximise")


def test_slurm_launcher_config_extends_submitit():
    cfg = compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SUBMITIT and launcher.partition == "gpu"
    assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.tasks_per_node) == (1, 8, 1)
    assert launcher.submitit_folder.endswith(".submitit/%j")  # the plugin's own defaults are kept


# ---------------------------------------------------------------- sweeps of 2 tiny runs


def sweep(demo: Path, tmp: Path, *launcher: str, heads: str = "regression,classification") -> pd.DataFrame:
    """`iqs train -m` of one-epoch runs, one per head of `heads`, through `launcher`."""
    import mlflow

    from iqs.train.run import main

    rc = main(
        [
            "-m",
            *launcher,
            f"paths.root_dir={tmp}",
            *demo_sources(demo),
            "backbone.input_size=64",
            "trainer=cpu_fast",
            "trainer.max_epochs=1",
            "cache.batch_size=64",
            "decision_cuts.enabled=false",
            "logger.plots=false",
            f"head={heads}",
            "hydra/job_logging=disabled",
        ]
    )
    assert rc == 0
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlruns/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True)
    n = len(heads.split(","))
    assert len(runs) == n and set(runs["status"]) == {"FINISHED"}, runs[["status", "tags.mlflow.runName"]]
    assert runs["tags.sweep_id"].nunique() == 1 and runs["tags.sweep_id"].iloc[0] != "none"
    assert set(runs["tags.head"]) == set(heads.split(","))
    assert runs["tags.output_dir"].nunique() == n
    assert runs["metrics.test/all/srcc"].notna().all()
    return runs


@pytest.mark.slow
def test_joblib_sweep_runs_two_jobs_in_parallel_with_a_share_of_the_cores(tiny_demo, tmp_path, monkeypatch):
    from iqs.train.launchers import available_cores

    for var in ("MLFLOW_TRACKING_URI", "IQS_CACHE_DIR", "IQS_DATA_DIR", "IQS_SWEEP_ID"):
        monkeypatch.delenv(var, raising=False)
    try:
        runs = sweep(tiny_demo, tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    finally:
        # joblib keeps its loky workers for reuse, and the interpreter waits for them at exit: the end of the
        # test session, where the other xdist worker is done and a core idles
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True, kill_workers=True)
    assert set(runs["tags.torch_threads"]) == {str(max(1, available_cores() // 2))}
    # two processes ran the jobs (joblib's loky workers), not this one
    assert runs["tags.mlflow.source.name"].nunique() >= 1


@pytest.mark.slow
def test_submitit_local_sweep_runs_its_job_in_a_submitted_process(
    tiny_demo, tmp_path, monkeypatch, migrated_db
):
    """One job (each job is a process that imports torch, Lightning and MLflow: ~10 s of CPU); sweeps of
    several jobs, their folders and one sweep id are the joblib test's."""
    for var in ("MLFLOW_TRACKING_URI", "IQS_CACHE_DIR", "IQS_DATA_DIR", "IQS_SWEEP_ID"):
        monkeypatch.delenv(var, raising=False)
    seed_store(tmp_path, migrated_db)  # the joblib test's concurrent jobs create theirs
    runs = sweep(
        tiny_demo,
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=20",
        heads="regression",
    )
    assert set(runs["tags.torch_threads"]) == {"1"}
    # submitit kept the job's stdout/stderr and pickled result under the sweep folder
    assert len(list(tmp_path.glob("multirun/train/*/.submitit/*/*_result.pkl"))) == 1
