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


def make_callbacks(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    from pytorch_lightning.callbacks import (
        EarlyStopping,
        LearningRateMonitor,
        ModelCheckpoint,
        RichProgressBar,
    )

    monitor, mode = str(cfg.monitor.metric), str(cfg.monitor.mode)
    callbacks: dict[str, Any] = {"lr": LearningRateMonitor(logging_interval="epoch")}
    if cfg.callbacks.checkpoint.enabled:
        callbacks["checkpoint"] = ModelCheckpoint(
            dirpath=output_dir / "checkpoints",
            # metric names hold '/', which would make sub-folders: the epoch alone names the file
            filename="best-epoch{epoch:03d}",
            auto_insert_metric_name=False,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
        )
        if cfg.callbacks.checkpoint.save_last:
            callbacks["last"] = last_checkpoint(output_dir / "checkpoints")
    es = cfg.callbacks.early_stopping
    if es.enabled:
        callbacks["early_stopping"] = EarlyStopping(
            monitor=monitor,
            mode=mode,
            patience=int(es.patience),
            min_delta=float(es.min_delta),
            # a NaN correlation (constant predictions early on) is a bad epoch, not a reason to stop
            check_finite=False,
        )
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks["progress"] = RichProgressBar(leave=True)
    return callbacks


def last_checkpoint(dirpath: Path) -> Any:
    """`last.ckpt` at the end of every epoch, what `resume=` continues from.

    Not the best checkpoint's `save_last=True`: Lightning 2.6 writes that one only when the best improves
    (ModelCheckpoint.on_validation_end), so a kill lost every epoch since. This second ModelCheckpoint
    (no monitor, one file under one name) saves each epoch; Lightning runs checkpoint callbacks last and in
    list order, so the file holds the best callback's state of the same epoch. Writes are atomic
    (AtomicCheckpointIO)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from iqs.train.resume import LAST

    return ModelCheckpoint(
        dirpath=dirpath,
        filename=LAST.removesuffix(".ckpt"),
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        enable_version_counter=False,
    )


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

    callbacks = make_callbacks(cfg, output_dir)
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
