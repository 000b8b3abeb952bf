"""Runs whose process died: found by host and pid tags, and marked KILLED.

A run that is SIGKILLed (or whose machine loses power) cannot end itself, so it would stay RUNNING
forever. Every run records where it runs (`iqs.host`, `iqs.pid`, `iqs.started`, and `iqs.slurm_job_id`
under SLURM); `iqs train` and `iqs compare` call `mark_dead_runs`, which ends as KILLED each RUNNING run
of this host whose process is gone (or whose pid now belongs to a younger process). Runs of other hosts
are left alone: their liveness cannot be checked from here, and a heartbeat would add a write to the
store every few seconds of every run. `iqs.ended_by` says who ended the run. A run whose process gave up
on a tracking-server outage ends as that process recorded (FAILED or KILLED, with the reason; see
iqs.tracking.kept), not KILLED.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOST_TAG = "iqs.host"
PID_TAG = "iqs.pid"
STARTED_TAG = "iqs.started"
SLURM_JOB_TAG = "iqs.slurm_job_id"
ENDED_BY_TAG = "iqs.ended_by"
# a process that started this long after the run's own start time is a newer process reusing the pid
PID_REUSE_SLACK_S = 5.0


def slurm_job_id() -> str | None:
    """`<array job>_<task>` or the job id: stays the same when SLURM requeues the job."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID")


def owner_tags() -> dict[str, str]:
    """The tags that let a later command check whether this process is still alive."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), STARTED_TAG: f"{time.time():.3f}"}
    job = slurm_job_id()
    if job:
        tags[SLURM_JOB_TAG] = job
    return tags


def process_start_time(pid: int) -> float | None:
    """Unix time when `pid` started, from /proc (Linux); None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
    except (OSError, StopIteration, ValueError):
        return None
    # field 22 (starttime, clock ticks since boot) counted after the ')' that ends the command name
    fields = stat[stat.rindex(")") + 2 :].split()
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_alive(pid: int, started: float | None = None) -> bool:
    """Whether the process that started a run at `started` (Unix time) still runs as `pid` on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    begun = process_start_time(pid)
    return not (begun is not None and started is not None and begun > started + PID_REUSE_SLACK_S)


def run_is_alive(run: Any) -> bool:
    """False only for a run of this host whose process is gone; runs of other hosts count as alive."""
    tags = run.data.tags
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return True
    started = tags.get(STARTED_TAG)
    return process_alive(int(tags[PID_TAG]), float(started) if started else None)


def mark_dead_runs(
    client: Any, experiment_ids: list[str] | None = None, *, page_size: int = 1000
) -> list[str]:
    """End as KILLED every RUNNING run of this host whose process died; returns their ids."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    host = socket.gethostname().replace("'", "")
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    # every page first: the search is paged by offset, so marking runs KILLED while paging would shift
    # the later pages and skip runs
    running, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=query, max_results=page_size, page_token=token
        )
        running.extend(page)
        token = page.token
        if not token:
            break
    killed = []
    for run in running:
        if run_is_alive(run):
            continue
        pid = run.data.tags.get(PID_TAG)
        if _end_as_recorded(client, run):
            killed.append(run.info.run_id)
            continue
        client.set_tag(run.info.run_id, ENDED_BY_TAG, f"liveness check: pid {pid} on {host} is gone")
        client.set_terminated(run.info.run_id, "KILLED")
        killed.append(run.info.run_id)
        log.warning(
            "MLflow run %s was RUNNING but its process (pid %s) is gone: marked KILLED", run.info.run_id, pid
        )
    return killed


def _end_as_recorded(client: Any, run: Any) -> bool:
    """A run whose process gave up on a tracking-server outage recorded how it ends (iqs.tracking.kept):
    FAILED (KILLED when it was interrupted) with the reason. True when it was ended so."""
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    from iqs.tracking.kept import read_record, upload_command

    job_dir = run.data.tags.get("output_dir")
    record = read_record(job_dir) if job_dir else None
    if record is None or record.run_id != run.info.run_id or record.status not in ("FAILED", "KILLED"):
        return False
    client.set_tag(run.info.run_id, "error", f"TrackingOutageError: {record.reason}"[:MAX_TAG_VAL_LENGTH])
    client.set_tag(
        run.info.run_id,
        ENDED_BY_TAG,
        f"liveness check for its process, after a tracking-server outage: {upload_command(Path(job_dir))}",
    )
    client.set_terminated(run.info.run_id, record.status)
    log.warning(
        "MLflow run %s was RUNNING; its process gave up on the tracking server and kept the rest in %s: "
        "marked %s (upload with: %s)",
        run.info.run_id,
        job_dir,
        record.status,
        upload_command(Path(job_dir)),
    )
    return True


def mark_dead_runs_in(tracking_uri: str) -> list[str]:
    """`mark_dead_runs` over every experiment of the store at `tracking_uri` (nothing when there is no store)."""
    from mlflow import MlflowClient

    from iqs.tracking.store import sqlite_path

    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        return []
    return mark_dead_runs(MlflowClient(tracking_uri))
