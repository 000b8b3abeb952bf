"""Multi-process (DDP) training: how the other ranks start, what each rank reads, and who writes.

`trainer=ddp` (GPUs, NCCL) and `trainer=ddp_cpu` (2 CPU processes, gloo) use `ReplayDDPStrategy`.

Starting ranks 1..N-1. Lightning's own launcher re-runs the command line for every extra rank, which
fails for `iqs train`: the command line Hydra reads has no `train` (iqs.core.config.hydra_app_argv), and under
Hydra it re-composes the config with rank 0's `hydra.run.dir`, which in a sweep is not the job's folder.
Here rank 0 writes its resolved job config to `<output_dir>/ddp/config.yaml` and starts the other ranks as
`python -m iqs train replay <that file>`: they train on exactly rank 0's configuration (sweep
overrides included), without Hydra, without an output folder or an MLflow run of their own. Ranks that a
cluster starts itself (srun with one task per GPU, torchrun) run the full `iqs train` each; Lightning
then creates no processes, and this module only keeps MLflow and the artifacts on rank 0.

Who does what:
- MLflow: rank 0 alone opens the run; the other ranks get `RankZeroOnlyRun`, whose calls do nothing
  (Lightning's `rank_zero_only` rank decides), and their Lightning logger is a rank-zero no-op too.
- Feature cache: ranks 1.. are started inside `trainer.fit`, after rank 0 built (or found) the cache, so
  they only read it. Ranks started together by a cluster meet at the cache's file lock
  (iqs.train.features): one builds, the others wait and read.
- Loaders: every rank reads a disjoint shard (iqs.train.samplers).
- After `trainer.test`, `finish` gathers every rank's test predictions on rank 0 and closes the process
  group; ranks 1.. then stop, and rank 0 goes on as a single process (decision cuts, artifacts, audit).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from iqs.train.samplers import is_global_zero, world

log = logging.getLogger(__name__)

REPLAY_ENV = "IQS_DDP_CONFIG"  # rank 0's resolved job config, for the ranks it starts


# ---------------------------------------------------------------- MLflow on rank 0 only


class RankZeroOnlyRun:
    """Stands in for `TrackedRun` on ranks > 0: the same attributes, and every method does nothing."""

    run_id = None

    def __init__(self, cfg: Any) -> None:
        from iqs.tracking.config_view import cfg_get
        from iqs.tracking.experiment import DEFAULT_EXPERIMENT
        from iqs.tracking.naming import sweep_id_for
        from iqs.tracking.store import tracking_uri_for

        self.cfg = cfg
        self.experiment_name = str(cfg_get(cfg, "logger.experiment_name", DEFAULT_EXPERIMENT))
        self.tracking_uri = tracking_uri_for(cfg)
        self.sweep_id = sweep_id_for(cfg)
        self.client = self  # `run.client.log_param(...)` too

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


@contextmanager
def rank_zero_tracked_run(
    cfg: Any, tags: Mapping[str, Any] | None = None, resume_run_id: str | None = None
) -> Iterator[Any]:
    """`tracked_run` on rank 0; a `RankZeroOnlyRun` on the other ranks (no MLflow run, no store access)."""
    if is_global_zero():
        from iqs.tracking import tracked_run

        with tracked_run(cfg, tags=tags, resume_run_id=resume_run_id) as run:
            yield run
    else:
        yield RankZeroOnlyRun(cfg)


# ---------------------------------------------------------------- after testing


def merge_test_outputs(parts: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every rank's test outputs as one set, in table-row order (as a single process would list them)."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    merged = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    order = np.argsort(merged["row"], kind="stable")
    if len(np.unique(merged["row"])) != len(order):
        raise RuntimeError("a test row was predicted on more than one rank (a padded sampler?)")
    return {k: v[order] for k, v in merged.items()}


def finish(trainer: Any, module: Any) -> bool:
    """After `trainer.test`: gather the test predictions on rank 0 and close the process group.

    Returns True on the rank that goes on (rank 0, or the only process); the others should stop.
    """
    shard = world()
    if shard is None:
        return True
    rank, size = shard
    dist = torch.distributed
    parts: list[Any] = [None] * size
    dist.all_gather_object(parts, module.test_outputs)
    module.test_outputs = merge_test_outputs(parts)
    dist.barrier()
    # rank 0 goes on alone: later loaders (decision cuts) must see every row, and torchmetrics must not
    # wait for ranks that have stopped
    dist.destroy_process_group()
    launcher = getattr(trainer.strategy, "launcher", None)
    if isinstance(launcher, ReplayLauncher):
        launcher.restore_env()
    return rank == 0


# ---------------------------------------------------------------- launching ranks 1..N-1


def write_replay_config(cfg: DictConfig, output_dir: Path, resume_checkpoint: str | None = None) -> Path:
    """Rank 0's resolved job config (with its output folder and the checkpoint a resumed run continues
    from, which the other ranks load too) for the ranks it starts; sets REPLAY_ENV.

    Nothing on the other ranks (they read it)."""
    if not is_global_zero():
        return Path(os.environ.get(REPLAY_ENV) or "")
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    resolved.output_dir = str(Path(output_dir).resolve())
    resolved.resume_checkpoint = str(resume_checkpoint) if resume_checkpoint else None
    path = Path(output_dir) / "ddp" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(resolved, path)
    os.environ[REPLAY_ENV] = str(path.resolve())
    return path


def uses_replay(cfg: DictConfig) -> bool:
    """Whether the trainer config asks for `ReplayDDPStrategy` (trainer=ddp, trainer=ddp_cpu)."""
    strategy = cfg.trainer.get("strategy")
    return isinstance(strategy, Mapping) and str(strategy.get("_target_", "")).endswith("ReplayDDPStrategy")


def launched_world_size() -> int:
    """How many ranks a cluster or torchrun started for this job (WORLD_SIZE, else srun's SLURM_NTASKS); 1
    for a plain process."""
    value = os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or "1"
    return int(value) if value.isdigit() else 1


def check_resume_world(cfg: DictConfig) -> None:
    """Refuse `resume=` for ranks a cluster starts itself (srun, torchrun, submitit tasks_per_node > 1).

    Only rank 0 may resolve `resume=` (it reads the MLflow store); the replay launcher hands the checkpoint
    to the ranks it starts (their config carries `resume_checkpoint`), but ranks started by a cluster, with
    any strategy (trainer=ddp too), have no such hand-off and would train from scratch beside a resumed
    rank 0."""
    from iqs.data.mixture import ConfigError
    from iqs.train.resume import resume_value

    size = launched_world_size()
    if size <= 1 or cfg.get("resume_checkpoint"):
        return
    value = resume_value(cfg)
    if value:
        raise ConfigError(
            f"resume={value} with {size} ranks started by the cluster (srun/torchrun/submitit tasks) is not "
            "supported: only rank 0 could find the checkpoint. Resume in one process that starts the other "
            "ranks itself (trainer=ddp or ddp_cpu, not under srun/torchrun), or start the run afresh"
        )


class ReplayLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher, starting ranks 1.. from rank 0's config file (module docstring).

    Only `_call_children_scripts` differs (the environment below is the one it sets); without a config
    file (REPLAY_ENV unset, e.g. a plain script) Lightning's own command is used.

    Private Lightning API, for want of a public one: Lightning 2.6 exports no launcher base class (`_Launcher`
    is private too) and a strategy gets its launcher only from `_configure_launcher`, so a replacing launcher
    subclasses `_SubprocessScriptLauncher` and overrides `_call_children_scripts` (using its
    `_check_can_spawn_children` and `procs`). tests/test_private_api.py fails when these names or signatures
    change in the locked Lightning.
    """

    ENV_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")

    def _call_children_scripts(self) -> None:
        config = os.environ.get(REPLAY_ENV)
        if not config:
            super()._call_children_scripts()
            return
        self._check_can_spawn_children()
        self._saved_env = {k: os.environ.get(k) for k in self.ENV_VARS}
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        for local_rank in range(1, self.num_processes):
            child_env = os.environ.copy()
            child_env["LOCAL_RANK"] = str(local_rank)
            # read by Lightning's rank_zero_only before the trainer exists (global_rank above)
            child_env["RANK"] = str(env.node_rank() * self.num_processes + local_rank)
            child_env.pop(REPLAY_ENV, None)
            command = [sys.executable, "-m", "iqs", "train", "replay", config]
            self.procs.append(subprocess.Popen(command, env=child_env))

    def stop_children(self, timeout: float = 10.0) -> None:
        """Terminate the ranks this launcher started (SIGTERM, then SIGKILL after `timeout` seconds)."""
        running = [p for p in self.procs if p.poll() is None]
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def restore_env(self) -> None:
        """Undo the variables set above, so the next job of a sequential sweep in this process does not
        look like an externally launched rank 0 (Lightning would then start no ranks and wait for them)."""
        for key, value in getattr(self, "_saved_env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class ReplayDDPStrategy(DDPStrategy):
    """`DDPStrategy` whose launcher starts the extra ranks with `ReplayLauncher`."""

    strategy_name = "iqs_ddp"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The grouped metrics are logged from torchmetrics values that are already synced over the ranks
        # (identical on every rank); Lightning cannot tell and would advise sync_dist for each of them.
        warnings.filterwarnings(
            "ignore",
            message=r"It is recommended to use `self\.log\('(val|test)/(?!loss')[^']*', \.\.\., sync_dist",
        )

    def on_exception(self, exception: BaseException) -> None:
        """A fit or test that fails: stop the ranks this process started and undo its DDP environment and
        process group. Lightning kills the children only on KeyboardInterrupt; otherwise they and
        LOCAL_RANK/WORLD_SIZE/MASTER_* would outlive the job, and the next DDP job of a sequential sweep
        would wait for ranks that never come."""
        super().on_exception(exception)
        launcher = self.launcher
        if not isinstance(launcher, ReplayLauncher):
            return
        launcher.stop_children()
        launcher.restore_env()
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    def _configure_launcher(self) -> None:
        # the only hook where a strategy picks its launcher (private, see ReplayLauncher); Lightning's
        # accelerator connector calls it once the cluster environment is known
        assert self.cluster_environment is not None
        if self._start_method != "popen":
            super()._configure_launcher()
            return
        self._launcher = ReplayLauncher(self.cluster_environment, self.num_processes, self.num_nodes)
