"""Multi-process training (iqs.train.distributed): shards, synced metrics, rank-zero tracking, and a
2-process gloo run on the CPU whose per-dataset metrics equal a single-process run's."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset, WeightedRandomSampler

from conftest import seed_store
from iqs.train import distributed, samplers
from iqs.train.distributed import RankZeroOnlyRun, merge_test_outputs
from iqs.train.samplers import ShardedBatchSampler, eval_sampler, train_sampler
from test_train import demo_sources

ROOT = Path(__file__).resolve().parents[1]


def as_rank(monkeypatch, rank: int, size: int) -> None:
    for module in (samplers, distributed):
        monkeypatch.setattr(module, "world", lambda: (rank, size))


def test_outside_ddp_the_samplers_are_left_alone():
    data = TensorDataset(torch.arange(10))
    weighted = WeightedRandomSampler(torch.ones(10), 10)
    assert train_sampler(data, weighted, seed=0) is weighted
    assert train_sampler(data, None, seed=0) is None
    assert eval_sampler(data) is None


def test_weighted_draw_is_split_into_disjoint_shards_of_the_same_draw(monkeypatch):
    """Each rank builds its own seeded sampler (as every DDP process does); their shards together are the
    single-process draw, position for position."""
    data = TensorDataset(torch.arange(50))
    weights = torch.linspace(0.1, 5.0, 50, dtype=torch.float64)

    def weighted() -> WeightedRandomSampler:
        return WeightedRandomSampler(
            weights, 41, replacement=True, generator=torch.Generator().manual_seed(3)
        )

    single = list(weighted())
    shards = []
    for rank in range(2):
        as_rank(monkeypatch, rank, 2)
        shards.append(list(train_sampler(data, weighted(), seed=0)))
    assert [len(s) for s in shards] == [21, 21]  # 41 draws padded to 42 so both ranks take 21 steps
    interleaved = [shards[i % 2][i // 2] for i in range(41)]
    assert interleaved == single
    assert shards[1][-1] == single[0]  # the padding repeats the first draw, once


def test_plain_shuffle_shards_cover_the_training_rows_once(monkeypatch):
    data = TensorDataset(torch.arange(20))
    shards = []
    for rank in range(2):
        as_rank(monkeypatch, rank, 2)
        sampler = train_sampler(data, None, seed=0)
        sampler.set_epoch(1)
        shards.append(list(sampler))
    assert sorted(shards[0] + shards[1]) == list(range(20))


def test_eval_shards_are_not_padded(monkeypatch):
    """An odd test set: a padded DistributedSampler would score one row twice."""
    data = TensorDataset(torch.arange(27))
    shards = []
    for rank in range(2):
        as_rank(monkeypatch, rank, 2)
        shards.append(list(eval_sampler(data)))
    assert [len(s) for s in shards] == [14, 13]
    assert sorted(shards[0] + shards[1]) == list(range(27))


def test_batch_sampler_shards_are_disjoint_and_equally_long():
    batches = [[i, i + 100] for i in range(7)]
    shards = [list(ShardedBatchSampler(batches, rank, 2)) for rank in range(2)]
    assert [len(s) for s in shards] == [3, 3] == [len(ShardedBatchSampler(batches, r, 2)) for r in range(2)]
    flat = [i for s in shards for b in s for i in b]
    assert len(flat) == len(set(flat)) and set(flat) <= {i for b in batches for i in b}


def test_merged_test_outputs_are_in_row_order_and_refuse_duplicates():
    a = {"row": np.array([4, 0, 2]), "score": np.array([4.0, 0.0, 2.0])}
    b = {"row": np.array([3, 1]), "score": np.array([3.0, 1.0])}
    merged = merge_test_outputs([a, {}, b])
    assert merged["row"].tolist() == [0, 1, 2, 3, 4] and merged["score"].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="more than one rank"):
        merge_test_outputs([a, a])


def test_other_ranks_get_a_run_that_logs_nothing(monkeypatch, tmp_path):
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from iqs.core.config import compose

    cfg = compose("train", [f"paths.root_dir={tmp_path}"])
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert not distributed.is_global_zero()
    with distributed.rank_zero_tracked_run(cfg) as run:
        assert isinstance(run, RankZeroOnlyRun) and run.run_id is None
        run.log_metrics({"x": 1.0})
        run.client.log_param(run.run_id, "feature_cache", "hit")
        from iqs.train.trainer_setup import build_trainer

        monkeypatch.setattr(
            "iqs.tracking.make_lightning_logger", lambda *a, **k: pytest.fail("rank 1 built an MLflow logger")
        )
        trainer, callbacks = build_trainer(cfg, run, tmp_path / "job")
        assert trainer.loggers == [] and "lr" not in callbacks and "checkpoint" in callbacks
    assert not list((tmp_path / "mlruns").glob("*"))  # no store was created (the resolver made the folder)
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    monkeypatch.setenv("NODE_RANK", "1")  # local rank 0 of the second node
    assert not distributed.is_global_zero()


def test_only_the_rank_that_owns_the_run_prints_the_test_table(tmp_path, capsys):
    """A cluster starts every rank as `iqs train`: each returns its metric, one prints the table."""
    from types import SimpleNamespace

    from iqs.core.config import compose
    from iqs.train.run import report_job

    cfg = compose("train", [f"paths.root_dir={tmp_path}"])
    metrics = {str(cfg.monitor.metric): 0.5, "test/all/srcc": 0.25}
    datamodule = SimpleNamespace(dataset_names=["demo_ava"])
    assert report_job(cfg, metrics, {"run_id": None, "datamodule": datamodule}) == 0.5
    assert capsys.readouterr().out == ""
    assert report_job(cfg, metrics, {"run_id": "abc123", "datamodule": datamodule}) == 0.5
    out = capsys.readouterr().out
    assert "test metrics:" in out and "abc123" in out and "0.25" in out


def test_a_resumed_ddp_run_hands_rank_zeros_checkpoint_and_folder_to_the_other_ranks(monkeypatch, tmp_path):
    """Rank 0 resolves `resume=`; ranks 1.. must continue from the same checkpoint in the same folder,
    without touching the store (they cannot resolve run ids) and without a folder of their own."""
    from omegaconf import OmegaConf
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    import iqs.train.run as run_module
    from iqs.core.config import compose

    monkeypatch.setenv(
        distributed.REPLAY_ENV, ""
    )  # restored (removed) after the test: write_replay_config sets it
    cfg = compose("train", [f"paths.root_dir={tmp_path}", "trainer=ddp_cpu"])
    assert distributed.uses_replay(cfg)
    rank0_dir, ckpt = tmp_path / "outputs" / "train" / "job", tmp_path / "last.ckpt"
    path = distributed.write_replay_config(cfg, rank0_dir, str(ckpt))
    assert os.environ[distributed.REPLAY_ENV] == str(path.resolve())

    seen = {}

    def fake_fit_and_test(cfg, run, output_dir, resume_from=None, mixture=None):
        seen.update(run=run, output_dir=output_dir, resume_from=resume_from)
        return {}, {"run_id": run.run_id}

    monkeypatch.setattr(run_module, "fit_and_test", fake_fit_and_test)
    monkeypatch.setattr("iqs.train.resume.prepare", lambda cfg: pytest.fail("rank 1 resolved resume="))
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    run_module.train(OmegaConf.load(path))  # what `python -m iqs train replay <config>` runs on rank 1
    assert seen["resume_from"] == str(ckpt) and Path(seen["output_dir"]) == rank0_dir.resolve()
    assert isinstance(seen["run"], RankZeroOnlyRun)
    assert not (tmp_path / "mlruns").exists() or not list((tmp_path / "mlruns").glob("*"))


def test_a_resumed_ddp_run_restores_the_wrapped_samplers_draws(monkeypatch):
    """Under DDP the weighted sampler and the within-source batch sampler sit inside Lightning's and our
    wrappers; the resume state must reach them, or a resumed run repeats epoch 0's draws."""
    from torch.utils.data import DataLoader

    from iqs.train.pair_batches import WithinSourceBatchSampler
    from iqs.train.resume import sampler_state, set_sampler_state
    from iqs.train.samplers import shard_batches

    as_rank(monkeypatch, 1, 2)
    data = TensorDataset(torch.arange(40))

    def weighted_loader() -> DataLoader:
        weighted = WeightedRandomSampler(
            torch.linspace(0.1, 5.0, 40), 40, generator=torch.Generator().manual_seed(3)
        )
        return DataLoader(data, sampler=train_sampler(data, weighted, seed=0), batch_size=4)

    def paired_loader() -> DataLoader:
        group = np.repeat([0, 1], 20)
        return DataLoader(data, batch_sampler=shard_batches(WithinSourceBatchSampler(group, 4, seed=0)))

    for make in (weighted_loader, paired_loader):
        loader = make()
        first = [b[0].tolist() for b in loader]  # epoch 0; the checkpoint at its end saves the state
        state = sampler_state(loader)
        second = [b[0].tolist() for b in loader]
        assert second != first
        fresh = make()
        set_sampler_state(fresh, state)
        assert [b[0].tolist() for b in fresh] == second, make.__name__


def test_a_failed_ddp_fit_stops_the_started_ranks_and_restores_the_environment(monkeypatch):
    """Lightning calls `strategy.on_exception` when fit or test raises, but kills the children only on
    KeyboardInterrupt: the replay strategy must stop them and undo LOCAL_RANK/WORLD_SIZE/MASTER_*, or the
    next DDP job of a sequential sweep waits for ranks that never come."""
    from lightning_fabric.plugins.environments import LightningEnvironment

    from iqs.train.distributed import ReplayDDPStrategy, ReplayLauncher

    for key in ReplayLauncher.ENV_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "before")
    launcher = ReplayLauncher(LightningEnvironment(), num_processes=2, num_nodes=1)
    launcher._saved_env = {k: os.environ.get(k) for k in ReplayLauncher.ENV_VARS}  # as _call_children_scripts
    for key in ReplayLauncher.ENV_VARS:
        monkeypatch.setenv(key, "1")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    launcher.procs.append(child)
    strategy = ReplayDDPStrategy()
    strategy._launcher = launcher
    try:
        strategy.on_exception(RuntimeError("a rank 0 error during fit"))
        assert child.poll() is not None and launcher.procs == []
    finally:
        if child.poll() is None:
            child.kill()
    assert os.environ["MASTER_ADDR"] == "before"
    assert not any(k in os.environ for k in ("LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "NODE_RANK"))


@pytest.mark.slow
def test_resume_is_refused_for_ranks_a_cluster_starts(monkeypatch, tmp_path):
    """srun/torchrun ranks > 0 cannot be handed rank 0's checkpoint: `resume=` stops with a way out, before
    any rank touches the store; one process, or the ranks the replay launcher (trainer=ddp) starts, still
    resume."""
    from omegaconf import OmegaConf

    from iqs.core.config import compose
    from iqs.data.mixture import ConfigError
    from iqs.train.distributed import check_resume_world
    from iqs.train.run import train
    from iqs.train.user_errors import USER_ERRORS

    for key in ("WORLD_SIZE", "SLURM_NTASKS", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr("iqs.train.resume.prepare", lambda cfg: pytest.fail("the store was read"))
    root = f"paths.root_dir={tmp_path}"
    check_resume_world(compose("train", [root, "resume=auto"]))  # one process: fine
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun
    check_resume_world(compose("train", [root]))  # no resume: fine
    monkeypatch.setenv(distributed.REPLAY_ENV, "")  # write_replay_config sets it
    replayed = distributed.write_replay_config(  # what rank 0 hands the ranks it starts
        compose("train", [root, "resume=auto", "trainer=ddp_cpu"]),
        tmp_path / "job",
        str(tmp_path / "last.ckpt"),
    )
    check_resume_world(OmegaConf.load(replayed))
    with pytest.raises(ConfigError, match="trainer=ddp") as err:
        train(compose("train", [root, "resume=auto", "+trainer.strategy=ddp", "trainer.devices=2"]))
    with pytest.raises(ConfigError, match="2 ranks started by the cluster"):  # torchrun with the replay one
        check_resume_world(compose("train", [root, "resume=auto", "trainer=ddp_cpu"]))
    assert isinstance(err.value, USER_ERRORS) and "2 ranks" in str(err.value)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("SLURM_NTASKS", "4")  # srun / submitit tasks_per_node=4
    with pytest.raises(ConfigError, match="4 ranks started by the cluster"):
        check_resume_world(compose("train", [root, "resume=0123456789abcdef"]))


# ---------------------------------------------------------------- end to end: 2 gloo processes vs 1


def overrides(demo: Path, tmp: Path) -> list[str]:
    """A tiny run whose model never changes (lr 0), so any difference between 1 and 2 processes is in the
    data sharding, metric syncing or gathering, not in the training."""
    return [
        f"paths.root_dir={tmp}",
        *demo_sources(demo),
        "backbone.input_size=64",
        "rebalance=sampler",  # the weighted draw, wrapped for DDP
        "optimizer.lr=0",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "loader.batch_size=16",
        "cache.batch_size=64",
        "decision_cuts.enabled=false",
        "logger.plots=false",
    ]


@pytest.mark.slow
def test_two_process_ddp_on_cpu_equals_one_process(tiny_demo, tmp_path, monkeypatch, migrated_db):
    import mlflow

    from iqs.core.config import compose
    from iqs.train.run import monitored_value, train

    for var in ("MLFLOW_TRACKING_URI", "IQS_CACHE_DIR", "IQS_DATA_DIR", "IQS_SWEEP_ID"):
        monkeypatch.delenv(var, raising=False)
    seed_store(tmp_path, migrated_db)
    ov = overrides(tiny_demo, tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "iqs.cli", "train", *ov, "trainer=ddp_cpu", "hydra/job_logging=none"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 embedded the images; rank 1, started afterwards, read the cache it wrote
    assert "[rank 1] INFO iqs.train.features: feature cache hit" in proc.stderr
    assert "[rank 1] INFO iqs.train.features: feature cache miss" not in proc.stderr
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 1

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1 and runs["status"].iloc[0] == "FINISHED"  # one run, from rank 0
    assert runs["tags.feature_cache"].iloc[0] == "miss"
    ddp = {k[len("metrics.") :]: v for k, v in runs.iloc[0].items() if k.startswith("metrics.")}
    out = Path(runs["tags.output_dir"].iloc[0])
    ddp_pred = pd.read_csv(out / "test_predictions.csv")
    assert list((tmp_path / "outputs" / "train").iterdir()) == [out]  # no folder of rank 1's own

    metrics, objects = train(
        compose("train", [*ov, "trainer.accelerator=cpu", f"output_dir={tmp_path}/single"])
    )
    table = objects["datamodule"].table
    dataset_names = objects["datamodule"].dataset_names
    test_rows = int((table["split"] == "test").sum())
    assert test_rows % 2 == 1  # an odd test set: padding would have counted a row twice
    assert len(ddp_pred) == test_rows and ddp_pred["image_id"].is_unique
    # what the single-process run logged (same store), val and test alike
    single = mlflow.get_run(objects["run_id"]).data.metrics
    keys = [k for k in single if k.startswith(("test/", "val/")) and k.count("/") == 2]
    assert len(keys) > 80 and {f"{s}/{d}/srcc" for s in ("val", "test") for d in dataset_names} <= set(keys)
    for k in keys:
        a, b = ddp[k], single[k]
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), (k, a, b)
    for k in ("test/loss", "val/loss"):  # means over every rank's rows (torchmetrics MeanMetric)
        assert math.isclose(ddp[k], single[k], rel_tol=1e-6), (k, ddp[k], single[k])
    assert metrics["test/all/srcc"] == single["test/all/srcc"]
    # the value `iqs train` returns to a sweeper (the monitored val metric) survives trainer.test
    assert monitored_value(objects["cfg"], metrics) == pytest.approx(single["val/all/srcc"], rel=1e-6)
    np.testing.assert_allclose(
        ddp_pred["pred_score"].to_numpy(), objects["predictions"]["pred_score"].to_numpy(), rtol=1e-6
    )
    assert Counter(ddp_pred["label"]) == Counter(objects["predictions"]["label"])
