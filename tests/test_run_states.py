"""Honest run states: signals end runs KILLED with exit 128+n, dead processes' runs are found, SLURM requeue is
configured, untrained runs are refused, and configuration/data errors print one line."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from conftest import sqlite_logger
from iqs.core.config import compose
from iqs.core.signals import Interrupted, cluster_plugins, signals_raise
from iqs.data.mixture import ConfigError
from iqs.tracking import tracked_run
from iqs.tracking.liveness import (
    HOST_TAG,
    PID_TAG,
    STARTED_TAG,
    mark_dead_runs,
    process_alive,
    process_start_time,
)

SLURM_ENV = {
    "SLURM_NTASKS": "1",
    "SLURM_JOB_NAME": "train",
    "SLURM_JOB_ID": "4242",
    "SLURM_NODELIST": "node1",
}


@pytest.fixture
def cfg(tmp_path: Path, migrated_db: Path):
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    return OmegaConf.create(
        {
            "paths": {"mlruns_dir": str(tmp_path / "mlruns")},
            "logger": sqlite_logger(tmp_path, "states"),
            "head": {"name": "regression"},
            "thresholds": {"name": "5_6", "t1": 5.0, "t2": 6.0},
        }
    )


def client_of(cfg) -> MlflowClient:
    return MlflowClient(cfg.logger.tracking_uri)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_raises_interrupted_and_the_run_ends_killed(cfg, signum):
    before = signal.getsignal(signum)
    with pytest.raises(Interrupted) as caught, signals_raise(), tracked_run(cfg) as run:
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this ends
    assert caught.value.exit_code == 128 + signum
    assert signal.getsignal(signum) is before  # handlers are restored
    ended = client_of(cfg).get_run(run.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags["error"].startswith("Interrupted: interrupted by SIG")
    # an ordinary error still ends FAILED
    with pytest.raises(ValueError), tracked_run(cfg) as run:
        raise ValueError("boom")
    assert client_of(cfg).get_run(run.run_id).info.status == "FAILED"


@pytest.mark.slow
def test_runs_record_their_process_and_dead_ones_are_marked_killed(cfg, tmp_path, capsys):
    from iqs.report.compare import main as compare

    with tracked_run(cfg) as finished:
        pass
    client = client_of(cfg)
    tags = client.get_run(finished.run_id).data.tags
    assert tags[HOST_TAG] == socket.gethostname() and tags[PID_TAG] == str(os.getpid())
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    assert not process_alive(dead_pid)
    me = process_start_time(os.getpid())
    assert process_alive(os.getpid(), me + 1)  # the run started just after its process
    assert not process_alive(os.getpid(), me - 60)  # the pid now belongs to a process younger than the run

    def running(host: str, pid: int) -> str:
        from iqs.tracking.mlflow_run import open_run

        run = open_run(cfg)  # a run left RUNNING, as by a SIGKILL
        client.set_tag(run.run_id, HOST_TAG, host)
        client.set_tag(run.run_id, PID_TAG, str(pid))
        # as if started with this process: 30 s ago would be before a young pytest process began (pid reuse)
        client.set_tag(run.run_id, STARTED_TAG, f"{me:.3f}")
        return run.run_id

    gone = running(socket.gethostname(), dead_pid)
    alive = running(socket.gethostname(), os.getpid())
    elsewhere = running("another-host", dead_pid)
    exp = client.get_experiment_by_name("states").experiment_id

    args = [f"logger.tracking_uri={cfg.logger.tracking_uri}", "format=csv"]
    assert compare([*args, "status=RUNNING", f"output={tmp_path}/running.csv"]) == 0  # sweeps first
    status = {r.info.run_id: r.info.status for r in client.search_runs([exp])}
    assert status == {finished.run_id: "FINISHED", gone: "KILLED", alive: "RUNNING", elsewhere: "RUNNING"}
    assert "is gone" in client.get_run(gone).data.tags["iqs.ended_by"]
    import pandas as pd

    assert set(pd.read_csv(tmp_path / "running.csv")["run_id"].str[:8]) == {alive[:8], elsewhere[:8]}
    assert compare([*args, "status=KILLED", f"output={tmp_path}/killed.csv"]) == 0
    assert list(pd.read_csv(tmp_path / "killed.csv")["run_id"].str[:8]) == [gone[:8]]
    assert mark_dead_runs(client) == []  # nothing left to mark


def test_slurm_gets_lightnings_auto_requeue_on_sigusr1(monkeypatch):
    import pytorch_lightning as pl
    from lightning_fabric.plugins.environments import SLURMEnvironment

    from iqs.train.checkpoint_io import AtomicCheckpointIO
    from iqs.train.trainer_setup import trainer_plugins

    for key in SLURM_ENV:
        monkeypatch.delenv(key, raising=False)
    assert cluster_plugins() == []
    for key, value in SLURM_ENV.items():
        monkeypatch.setenv(key, value)
    (env,) = cluster_plugins()
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal == signal.SIGUSR1
    trainer = pl.Trainer(accelerator="cpu", devices=1, plugins=trainer_plugins(), logger=False)
    assert trainer._accelerator_connector.cluster_environment.requeue_signal == signal.SIGUSR1
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.slow
@pytest.mark.parametrize(
    "override", ["trainer.max_epochs=0", "+trainer.limit_train_batches=0", "+trainer.max_steps=0"]
)
def test_untrained_runs_are_refused_unless_allowed(override):
    from iqs.train.run import check_trained, untrained

    cfg = compose("train", [override])
    assert untrained(cfg)
    with pytest.raises(ConfigError, match="allow_untrained=true"):
        check_trained(cfg)
    check_trained(compose("train", [override, "allow_untrained=true"]))
    assert not untrained(compose("train", []))


@pytest.mark.slow
def test_config_errors_print_one_line_and_log_the_traceback(tmp_path, capsys):
    from iqs.train.run import main

    rc = main([f"paths.root_dir={tmp_path}", "trainer.max_epochs=0", f"hydra.run.dir={tmp_path}/job"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip().splitlines() == [
        next(line for line in err.splitlines() if line.startswith("iqs train: error: these trainer settings"))
    ]
    assert "Traceback" not in err
    log_text = next((tmp_path / "job").glob("*.log")).read_text()
    assert "Traceback (most recent call last)" in log_text and "ConfigError" in log_text


@pytest.mark.slow
def test_sigterm_to_iqs_train_exits_143_and_the_run_ends_killed(tmp_path, tiny_demo, migrated_db):
    """A real `iqs train` process, stopped by SIGTERM in its first epoch."""
    from conftest import seed_store

    seed_store(tmp_path, migrated_db)
    job = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from iqs.train.module import QualityLitModule\n"
        "marker = Path(sys.argv[1])  # iqs train replaces sys.argv\n"
        "def slow(self, batch, i):\n"
        "    marker.write_text('training')\n"
        "    time.sleep(600)\n"
        "QualityLitModule.training_step = slow\n"
        "from iqs.cli import main\n"
        "sys.argv = ['iqs', 'train', *sys.argv[2:]]  # the console script's own command line\n"
        "sys.exit(main())\n"
    )
    from test_resume import tiny

    marker = tmp_path / "training"
    ov = [*tiny(tmp_path, tiny_demo), "hydra/job_logging=disabled"]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "IQS_CACHE_DIR")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.Popen([sys.executable, "-c", job, str(marker), *ov], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    runs = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db").search_experiments()]
    )
    assert [r.info.status for r in runs] == ["KILLED"]


@pytest.mark.slow
def test_a_data_error_prints_one_line_and_the_run_keeps_the_traceback(
    tmp_path, capsys, monkeypatch, migrated_db
):
    from conftest import seed_store
    from iqs.train.run import main
    from test_resume import tiny

    for var in ("MLFLOW_TRACKING_URI", "IQS_CACHE_DIR", "IQS_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    seed_store(tmp_path, migrated_db)
    rc = main([*tiny(tmp_path, tmp_path / "nowhere"), f"hydra.run.dir={tmp_path}/job"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("iqs train: error:")]
    assert "nowhere" in line and "annotation file not found" in line
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED" and "DataError" in run.data.tags["error"]
    traceback_txt = client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path))
    assert "Traceback (most recent call last)" in Path(traceback_txt).read_text()
    assert "Traceback (most recent call last)" in (tmp_path / "job" / "run.log").read_text()


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_a_resumed_run_names_its_new_process_before_it_is_running_again(cfg, monkeypatch):
    """A liveness check on this host between `RUNNING` and the new owner tags would kill the resumed run."""
    from iqs.tracking.mlflow_run import open_run

    with pytest.raises(ValueError), tracked_run(cfg) as first:
        raise ValueError("interrupted attempt")
    client = client_of(cfg)
    client.set_tag(first.run_id, PID_TAG, str(dead_pid()))  # the interrupted attempt's process is gone
    checked: list[list[str]] = []
    update_run = MlflowClient.update_run

    def update_then_check(self, run_id, status=None, **kwargs):
        update_run(self, run_id, status=status, **kwargs)
        checked.append(mark_dead_runs(client))  # `iqs compare` on this host, at the worst moment

    monkeypatch.setattr(MlflowClient, "update_run", update_then_check)
    run = open_run(cfg, resume_run_id=first.run_id)
    assert checked == [[]]
    got = client.get_run(run.run_id)
    assert got.info.status == "RUNNING" and got.data.tags[PID_TAG] == str(os.getpid())
    run.end()


@pytest.mark.slow
def test_every_dead_run_is_marked_when_they_span_several_pages(cfg):
    """The RUNNING search is paged by offset: runs marked while paging would shift the next page."""
    from iqs.tracking.mlflow_run import open_run

    client = client_of(cfg)
    gone = dead_pid()
    runs = [open_run(cfg).run_id for _ in range(5)]
    for run_id in runs:
        client.set_tag(run_id, PID_TAG, str(gone))
    assert sorted(mark_dead_runs(client, page_size=2)) == sorted(runs)
    assert {client.get_run(r).info.status for r in runs} == {"KILLED"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to stand in for a launcher's worker process")
def test_a_config_error_in_a_worker_process_makes_the_sweep_exit_1(monkeypatch, tmp_path):
    """joblib/submitit run a sweep's jobs in other processes, where `report` fills their own `reported`;
    the marker folder carries the error back, so `iqs train -m` exits 1, and nothing is left behind."""
    import iqs.train.run as run_module
    from iqs.train import user_errors

    def sweep_in_a_worker() -> None:
        pid = os.fork()
        if pid == 0:  # the worker: a job whose dataset root is wrong
            try:
                user_errors.report(ConfigError("dataset.root=/nowhere: no such folder"))
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_module, "hydra_entry", sweep_in_a_worker)
    assert run_module.main(["-m", "seed=1,2"]) == 1
    assert user_errors.reported == []  # the parent itself saw nothing
    assert list(tmp_path.iterdir()) == [] and user_errors.ERRORS_ENV not in os.environ
    monkeypatch.setattr(run_module, "hydra_entry", lambda: None)
    assert run_module.main([]) == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["thresholds.t1=7", "thresholds.t2=5"], "thresholds must satisfy t1 < t2 .* got 7.0, 5.0"),
        (["data.folds=5", "data.fold=7"], r"fold must be an integer in \[0, 4\] with folds=5, got 7"),
        (["loss.rank_weight=-1"], "loss.rank_weight must be >= 0"),
        (["decision_cuts.objective=best"], "decision_cuts.objective must be one of"),
        (["monitor.mode=maximum"], "monitor.mode must be min or max, got 'maximum'"),
        # the groups iqs.train.build instantiates: an unknown key names the nearest valid one
        (["+head.dropuot=0.1"], "unknown option 'dropuot' for head 'regression'. Did you mean 'dropout'"),
        (["rebalance=sampler", "+rebalance.alpah=1"], "for rebalance 'sampler'. Did you mean 'alpha'"),
        (["+backbone.pooll=mlsp"], "unknown option 'pooll' for backbone. Did you mean 'pool'"),
        (["head=classification", "rebalance=balanced_mse"], "needs head=regression, got head=classification"),
        (["head.input_norm=batchnrom"], "unknown input_norm 'batchnrom'. Did you mean 'batchnorm'"),
    ],
)
@pytest.mark.slow
def test_bad_values_are_refused_before_an_mlflow_run_exists(tmp_path, capsys, overrides, message):
    """Values the config alone shows to be wrong: one line, exit 1, and no run (not even a FAILED one)."""
    import re

    from mlflow import MlflowClient

    from iqs.train.run import main

    rc = main([f"paths.root_dir={tmp_path}", *overrides, f"hydra.run.dir={tmp_path}/job"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and re.search(message, err[0]), err
    db = tmp_path / "mlruns" / "mlflow.db"
    if db.is_file():  # refused before the store was even opened, or at least before a run was created
        client = MlflowClient(f"sqlite:///{db}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
