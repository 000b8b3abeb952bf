"""`iqs upload job_dir=<job folder>`: send what a tracking-server outage kept in the job folder to its run.

When the server stayed down past `logger.outage_grace_s`, `iqs train` kept the run's remaining artifacts,
metric values, tags and params in `<job folder>/mlflow-pending/` (iqs.tracking.kept) and said so in one
line. With the server back, this command sends them (params already logged are skipped; a metric value
the server already holds is not stored twice) and ends the run: FINISHED when the job itself had
completed (its outage tags `error` and `iqs.ended_by` are then removed, and `iqs.uploaded` says what
came late), else with the recorded FAILED or KILLED. The folder is removed once everything is sent.

    iqs upload job_dir=outputs/train/2026-12-07_10-00-00_3f9a1c2e
    iqs upload job_dir=... tracking_uri=http://mlflow.lab.example:5000   # the server moved
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iqs.core.config import CommandLineError
from iqs.tracking.kept import ARTIFACTS, PENDING_DIR, Record, read_metrics, read_record
from iqs.tracking.liveness import ENDED_BY_TAG
from iqs.tracking.mlflow_run import PARAMS_PER_BATCH as BATCH
from iqs.tracking.outage import METRICS_PER_BATCH as METRIC_BATCH


def upload(job_dir: str | Path, tracking_uri: str | None = None) -> str:
    """Send the kept files and values of `job_dir` to its run and end it; returns the line to print."""
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag

    job_dir = Path(job_dir)
    record = read_record(job_dir)
    if record is None:
        raise CommandLineError(
            f"{job_dir / PENDING_DIR} holds no kept run (no record.json): nothing to upload; give the job "
            "folder that `iqs train` named"
        )
    client = MlflowClient(tracking_uri or record.tracking_uri)
    run = client.get_run(record.run_id)
    folder = job_dir / PENDING_DIR
    logged = run.data.params
    params = [Param(k, v) for k, v in record.params.items() if k not in logged]
    tags = [RunTag(k, v) for k, v in record.tags.items()]
    for i in range(0, len(params), BATCH):
        client.log_batch(record.run_id, params=params[i : i + BATCH])
    for i in range(0, len(tags), BATCH):
        client.log_batch(record.run_id, tags=tags[i : i + BATCH])
    metrics = read_metrics(job_dir)
    for i in range(0, len(metrics), METRIC_BATCH):
        client.log_batch(record.run_id, metrics=metrics[i : i + METRIC_BATCH])
    files = [p for p in (folder / ARTIFACTS).rglob("*") if p.is_file()]
    if files:
        client.log_artifacts(record.run_id, str(folder / ARTIFACTS))
    status = _end(client, run, record, len(files), len(metrics))
    shutil.rmtree(folder)
    return (
        f"MLflow run {record.run_id}: {len(files)} artifact files, {len(metrics)} metric values and "
        f"{len(tags)} tags uploaded to {client.tracking_uri}; the run is {status}"
    )


def _end(client: Any, run: Any, record: Record, n_files: int, n_metrics: int) -> str:
    """FINISHED when the job completed (its outage marks removed), else the recorded FAILED or KILLED."""
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    note = f"{now}: {n_files} artifact files and {n_metrics} metric values kept through an outage ({record.reason})"
    client.set_tag(record.run_id, "iqs.uploaded", note[:MAX_TAG_VAL_LENGTH])
    if record.finished:
        tags = client.get_run(record.run_id).data.tags
        if tags.get("error", "").startswith("TrackingOutageError"):
            client.delete_tag(record.run_id, "error")
        if ENDED_BY_TAG in tags:
            client.delete_tag(record.run_id, ENDED_BY_TAG)
        client.set_terminated(record.run_id, "FINISHED")
        return "FINISHED"
    if run.info.status == "RUNNING":
        client.set_terminated(record.run_id, record.status)
    return client.get_run(record.run_id).info.status


def main(argv: list[str] | None = None) -> int:
    from omegaconf import OmegaConf

    from iqs.core.config import compose
    from iqs.tracking.http_settings import apply_http_settings

    cfg = compose("upload", list(argv or []))
    if OmegaConf.is_missing(cfg, "job_dir"):
        raise CommandLineError("give the job folder: iqs upload job_dir=<folder that `iqs train` named>")
    apply_http_settings(cfg)  # bounded HTTP calls, as every command (iqs.tracking.http_settings)
    print(upload(cfg.job_dir, cfg.tracking_uri))
    return 0
