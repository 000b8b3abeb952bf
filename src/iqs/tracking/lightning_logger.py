"""The Lightning logger bound to a `TrackedRun`, so `self.log` in the LightningModule lands in its run."""

from __future__ import annotations

from typing import Any

from iqs.tracking.config_view import cfg_get
from iqs.tracking.mlflow_run import TrackedRun


def make_lightning_logger(run: TrackedRun, *, log_model: bool | None = None) -> Any:
    """A Lightning `MLFlowLogger` writing into `run` (same run id and store).

    Lightning's own `MLFlowLogger.finalize` marks the run FINISHED at the end of every `trainer.fit`
    and `trainer.test` (pytorch_lightning/trainer/call.py), i.e. before the test artifacts are written,
    and FAILED on any trainer exception. Here the run's status belongs to `tracked_run`, so `finalize`
    only uploads checkpoints (when `log_model`). `log_metrics` skips the steps an earlier attempt of a
    resumed run stored (`TrackedRun.fresh`). `log_hyperparams` is a no-op: the run already holds
    the full resolved config as params, and Lightning's copy (keys joined by '/', values cut at 250
    characters) would only duplicate it, or clash with it, since MLflow params cannot change.
    `log_model` None: `logger.log_model` of the run's config.

    The logger talks through the run's own client (`run.client`, see `make_client`): its HTTP calls are
    bounded and, for a tracking server, its metrics are buffered through an outage (iqs.tracking.outage)
    instead of blocking the training loop.
    """
    from pytorch_lightning.loggers import MLFlowLogger
    from pytorch_lightning.utilities import rank_zero_only

    class RunBoundMLFlowLogger(MLFlowLogger):
        @property
        def experiment(self) -> Any:
            # Lightning's public handle on the MLflow client, through which every call of the logger goes:
            # the run's own client here (the run already exists; nothing to create)
            return run.client

        @property
        def experiment_id(self) -> str:
            return run.experiment_id

        @rank_zero_only
        def log_hyperparams(self, params: Any) -> None:
            return None

        @rank_zero_only
        def log_metrics(self, metrics: Any, step: int | None = None) -> None:
            # a resumed run replays the steps after its last checkpoint: each step is stored once
            fresh = run.fresh(metrics, step)
            if fresh:
                super().log_metrics(fresh, step)

        @rank_zero_only
        def finalize(self, status: str = "success") -> None:
            # Lightning's `finalize` would also end the run. Its checkpoint upload has no public entry:
            # `_checkpoint_callback` and `_scan_and_log_checkpoints` are private (Lightning 2.6), so this
            # calls them, and tests/test_private_api.py fails when they change
            if self._checkpoint_callback:
                self._scan_and_log_checkpoints(self._checkpoint_callback)

    if log_model is None:
        log_model = bool(cfg_get(run.cfg, "logger.log_model", False))
    logger = RunBoundMLFlowLogger(
        experiment_name=run.experiment_name,
        tracking_uri=run.tracking_uri,
        run_id=run.run_id,
        log_model=log_model,
    )
    return logger
