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

from iqs.core.lazy import lazy_attributes

# names are imported on first use: the config view and the store (for `iqs compare`, the model card) come
# without Lightning, which only the training logger needs (~1-4 s to import)
_WHERE = {
    "TrackedRun": "mlflow_run",
    "open_run": "mlflow_run",
    "tracked_run": "mlflow_run",
    "axes_of": "naming",
    "run_name_for": "naming",
    "sweep_id_for": "naming",
    "flatten_config": "config_view",
    "make_lightning_logger": "lightning_logger",
    "tracking_uri_for": "store",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_attributes(__name__, _WHERE)
