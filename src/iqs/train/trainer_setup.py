"""The Lightning trainer of a run: its callbacks (best checkpoint, early stopping, progress, resume
state), checkpoint-writing plugins and the MLflow logger that writes into the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from iqs.tracking.mlflow_run import TrackedRun


def trainer_plugins() -> list[Any]:
    """Atomic checkpoint writes, and Lightning's SLURM auto-requeue under SLURM (iqs.core.signals)."""
    from iqs.core.signals import cluster_plugins
    from iqs.train.checkpoint_io import AtomicCheckpointIO

    return [AtomicCheckpointIO(), *cluster_plugins()]


def build_trainer(cfg: DictConfig, run: TrackedRun, output_dir: Path) -> tuple[pl.Trainer, dict[str, Any]]:
    """`cfg.trainer` with the run's callbacks (by name), its MLflow logger (none on DDP ranks > 0) and the
    plugins."""
    from iqs.tracking import make_lightning_logger
    from iqs.train import build
    from iqs.train.resume import ResumeState

    callbacks = build.callbacks(cfg, output_dir)
    callbacks["resume"] = ResumeState(run.run_id)
    if run.run_id is None:
        # a DDP rank > 0 (iqs.train.distributed.RankZeroOnlyRun): no logger, so it never opens the store;
        # the learning-rate monitor needs one and only logs, and rank 0 logs the rates
        logger: Any = False
        callbacks.pop("lr", None)
    else:
        logger = make_lightning_logger(run, log_model=bool(cfg.logger.get("log_model", False)))
    trainer = build.trainer(
        cfg,
        callbacks=list(callbacks.values()),
        logger=logger,
        default_root_dir=str(output_dir),
        plugins=trainer_plugins(),
    )
    return trainer, callbacks
