"""MLflow tracking for training runs: one run per job, its params, tags, metrics and what an outage kept.

    from iqs.tracking import tracked_run, make_lightning_logger
    from iqs.report.artifacts import log_test_artifacts

    with tracked_run(cfg) as run:                       # FINISHED on success, FAILED + traceback on error
        run.log_mixture(mix.table, mix.fingerprint)     # fingerprint tag + data/counts.csv
        trainer = pl.Trainer(logger=make_lightning_logger(run), ...)   # self.log lands in the same run
        ...
        run.log_metrics({"test/all/srcc": 0.71})
        log_test_artifacts(
            run, predictions, metrics, confusion, mix.table, (t1, t2), mix.source_thresholds, cfg, best_ckpt
        )

Reports on the runs (`iqs compare`, plots, the model card, test artifacts) live one floor up, in
iqs.report; tests/test_architecture.py checks that tracking never imports them.
"""

from __future__ import annotations

from iqs.tracking.config_view import flatten_config
from iqs.tracking.lightning_logger import make_lightning_logger
from iqs.tracking.mlflow_run import TrackedRun, open_run, tracked_run
from iqs.tracking.naming import axes_of, run_name_for, sweep_id_for
from iqs.tracking.store import tracking_uri_for

__all__ = [
    "TrackedRun",
    "axes_of",
    "flatten_config",
    "make_lightning_logger",
    "open_run",
    "run_name_for",
    "sweep_id_for",
    "tracked_run",
    "tracking_uri_for",
]
