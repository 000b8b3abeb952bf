"""What a tracking-server outage kept of a run, in the run's job folder, until `iqs upload` sends it.

When the server stays down past `logger.outage_grace_s` (iqs.tracking.outage), the run's remaining
artifacts, metric values, tags and params, and the status it must end with, are written here instead:

    <job folder>/mlflow-pending/
        record.json            run id, server, status to end with, why, tags and params to set
        metrics.jsonl          one metric value a line: key, value, timestamp (ms), step
        artifacts/<path>       each artifact under the path it would have had in the run

`iqs upload job_dir=<job folder>` (iqs.tracking.upload) sends them and ends the run; until then the
next `iqs train` or `iqs compare` on the host ends a run left RUNNING with the recorded status and
reason (iqs.tracking.liveness).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PENDING_DIR = "mlflow-pending"
RECORD = "record.json"
METRICS = "metrics.jsonl"
ARTIFACTS = "artifacts"


def upload_command(job_dir: Path) -> str:
    return f"iqs upload job_dir={job_dir}"


@dataclass
class Record:
    """record.json: the run, its server, and what the outage left to do."""

    run_id: str
    tracking_uri: str
    reason: str = ""
    status: str = "RUNNING"  # the status to end the run with (FAILED or KILLED) once it answers
    finished: bool = False  # the job itself completed: once everything is uploaded the run is FINISHED
    ended: bool = False  # the job's last try reached the server and ended the run with `status`
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


class KeptRun:
    """The folder of one run's kept things (created on first write)."""

    def __init__(self, job_dir: Path, run_id: str, tracking_uri: str) -> None:
        self.job_dir = Path(job_dir)
        self.folder = self.job_dir / PENDING_DIR
        existing = read_record(self.job_dir)
        if existing is not None and existing.run_id == run_id:
            self.record = existing
        else:
            self.record = Record(run_id, tracking_uri)

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{RECORD}.tmp"
        tmp.write_text(json.dumps(asdict(self.record), indent=1), encoding="utf-8")
        os.replace(tmp, self.folder / RECORD)

    def add_artifact(self, local_path: str | Path, artifact_path: str | None) -> None:
        """The file, or the folder's contents, under `artifacts/<artifact_path>/` (a hard link when it can:
        checkpoints are large, and a link survives the caller's temporary file)."""
        src = Path(local_path)
        dest = self.folder / ARTIFACTS / (artifact_path or "")
        dest.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(src), str(dest / src.name))
        self.save()

    def add_metrics(self, metrics: Iterable[Any]) -> None:
        rows = [
            json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step})
            for m in metrics
        ]
        if rows:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / METRICS, "a", encoding="utf-8") as f:
                f.write("\n".join(rows) + "\n")
            self.save()

    def add_tags(self, tags: Mapping[str, str]) -> None:
        self.record.tags.update({str(k): str(v) for k, v in tags.items()})
        self.save()

    def add_params(self, params: Mapping[str, str]) -> None:
        self.record.params.update({str(k): str(v) for k, v in params.items()})
        self.save()

    def counts(self) -> tuple[int, int]:
        """(artifact files, metric values) kept."""
        files = [p for p in (self.folder / ARTIFACTS).rglob("*") if p.is_file()]
        return len(files), len(read_metrics(self.job_dir))


def _link_or_copy(src: str, dst: str) -> str:
    if os.path.exists(dst):
        os.unlink(dst)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)
    return dst


def read_record(job_dir: str | Path) -> Record | None:
    path = Path(job_dir) / PENDING_DIR / RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Record(**{k: v for k, v in data.items() if k in Record.__dataclass_fields__})


def read_metrics(job_dir: str | Path) -> list[Any]:
    """The kept metric values as MLflow `Metric`s, in logging order."""
    from mlflow.entities import Metric

    path = Path(job_dir) / PENDING_DIR / METRICS
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Metric(r["key"], float(r["value"]), int(r["timestamp"]), int(r["step"])) for r in rows]
