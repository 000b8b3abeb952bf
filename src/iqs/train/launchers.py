"""What a sweep's launcher means for one job: its share of the CPU cores.

`hydra/launcher=joblib` runs `n_jobs` jobs at once on one machine; each torch would otherwise start one
intra-op thread per core, so n_jobs jobs fight over the cores (n_jobs x cores threads). The submitit
launchers (`slurm`, `submitit_local`) give each task `cpus_per_task` cores. `iqs train` sets
`torch.set_num_threads(threads_per_job(cfg))`; an explicit `num_threads=` wins.
"""

from __future__ import annotations

import os
from typing import Any


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a SLURM allocation), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def joblib_jobs(n_jobs: int, cores: int) -> int:
    """joblib's reading of `n_jobs`: negative counts from the core count (-1 = all cores, -2 = all but one)."""
    if n_jobs == 0:
        raise ValueError("hydra.launcher.n_jobs=0 runs nothing; use a positive count or -1 (every core)")
    return n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)


def threads_per_job(cfg: Any, launcher: Any = None, cores: int | None = None) -> int | None:
    """Torch threads for this job: `num_threads` when set; cores // n_jobs under the joblib launcher;
    `cpus_per_task` under a submitit launcher; None (torch's default) otherwise.

    `launcher`: the `hydra.launcher` node (default: the running Hydra job's, if any).
    """
    explicit = cfg.get("num_threads") if hasattr(cfg, "get") else None
    if explicit:
        return int(explicit)
    if launcher is None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        launcher = HydraConfig.get().launcher
    target = str(launcher.get("_target_", ""))
    cores = available_cores() if cores is None else int(cores)
    if target.endswith("JoblibLauncher"):
        return max(1, cores // joblib_jobs(int(launcher.get("n_jobs", -1)), cores))
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    return None


def optuna_direction(mode: str) -> str:
    """`monitor.mode` (max | min) as Optuna's study direction (maximize | minimize)."""
    directions = {"max": "maximize", "min": "minimize"}
    if str(mode) not in directions:
        raise ValueError(f"monitor.mode must be max or min, got {mode!r}")
    return directions[str(mode)]


def register_resolvers() -> None:
    """`${iqs_optuna_direction:${monitor.mode}}` in conf/hparams_search/ presets."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("iqs_optuna_direction", optuna_direction, replace=True)
