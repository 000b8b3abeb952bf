"""Training never waits for a tracking server: metrics are buffered while it is down and sent when it returns.

The behaviour (documented in docs/running-at-scale/tracking-server.md):

- During training, metric batches (Lightning's `self.log`, `TrackedRun.log_metrics`) go to a queue that one
  background thread sends to the server. Training never waits for the network.
- When the server cannot be reached the thread logs ONE warning (where, since when, what happens next),
  keeps every value in memory (up to `logger.outage_max_buffered` values; newer ones are then dropped and
  counted, and the count is logged when the run ends) and retries every `logger.outage_retry_s`. When a retry succeeds it logs one line ("back after
  N s, sent M buffered values") and the run holds every metric, with its original step and timestamp.
- Every other call to a run (params, tags, artifacts, dataset inputs, reading the run back, ending it) is
  synchronous, bounded by MLflow's own HTTP settings (iqs.tracking.http_settings), and goes through the
  same policy: while the server is unreachable it is retried every `logger.outage_retry_s`, and reads and
  the run's end first wait for the queue. One outage costs at most `logger.outage_grace_s` of waiting
  (ABORT_GRACE_S when the run ends FAILED or KILLED). Creating the run is not retried: without a run
  there is nothing to keep.
- Past the grace period the client gives up on the server for the rest of the job: the queued metrics,
  and every later artifact, tag, param and metric, go to the job folder (iqs.tracking.kept); the run's end
  records the status it must have (FAILED, or KILLED for a signal), tries once, without waiting, to end
  it so, and raises `RunKeptLocally`, whose one line says what was kept where and gives the command that
  uploads it (`iqs upload job_dir=...`, iqs.tracking.upload). A run its process could not end is ended
  with the recorded status by the next `iqs train` or `iqs compare` on the host (iqs.tracking.liveness).

Why not MLflow's asynchronous logging (`log_batch(synchronous=False)`, MLFLOW_ENABLE_ASYNC_LOGGING)? Its
queue (mlflow.utils.async_logging.AsyncLoggingQueue) sends each batch once, with the HTTP retries, on a
pool of 10 threads; a batch that still fails is dropped and logs its own error. Over an outage that is one
error per batch and lost metrics, so this module keeps MLflow's HTTP layer and adds only the queue.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

log = logging.getLogger(__name__)

THREAD_NAME = "iqs-mlflow-metrics"
METRICS_PER_BATCH = 1000  # MLflow's limit of metrics per log_batch (mlflow.utils.validation)
ABORT_GRACE_S = 10.0  # longest wait for buffered metrics when a run ends FAILED or KILLED


class TrackingOutageError(RuntimeError):
    """The tracking server stayed unreachable past the grace period."""


def is_outage(exc: BaseException) -> bool:
    """True for errors a later retry may cure: no connection, timeouts, 5xx and 429 answers. A 4xx
    answer (a rejected value, a deleted run) will fail again, so its batch is dropped instead."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return status >= 500 or status == 429
    return isinstance(exc, requests.exceptions.RequestException | OSError)


class _OwnThreadOnly(logging.Filter):
    """Drops urllib3's "Retrying (Retry(total=2, ...))" warnings raised by the sender thread: during an
    outage it would print several per retry round; the buffer reports the outage once itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.threadName.startswith(THREAD_NAME)


_FILTER = _OwnThreadOnly()


class MetricBuffer:
    """A FIFO of (run id, Metric) sent by one daemon thread through `send(run_id, metrics)`."""

    def __init__(
        self,
        send: Callable[[str, list[Any]], None],
        where: str,
        *,
        retry_interval_s: float = 15.0,
        max_pending: int = 200_000,
    ) -> None:
        self._send = send
        self.where = where
        self.retry_interval_s = float(retry_interval_s)
        self.max_pending = int(max_pending)
        self._pending: deque[tuple[str, Any]] = deque()
        self._cond = threading.Condition()
        self._busy = False  # a batch is on the wire
        self._wake = False  # a flush asks for a retry now
        self._thread: threading.Thread | None = None
        self.outage_since: float | None = None  # time.monotonic() of the first failure
        self.last_error: BaseException | None = None
        self.sent = 0
        self.dropped = 0  # values lost: buffer full, or rejected by the server (4xx)
        self._warned_full = False
        self._closed = False  # close(): the values go to the job folder instead

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    def put(self, run_id: str, metrics: Sequence[Any]) -> None:
        if not metrics:
            return
        with self._cond:
            room = self.max_pending - len(self._pending)
            if room < len(metrics):
                if not self._warned_full:
                    self._warned_full = True
                    log.warning(
                        "MLflow metric buffer full (%d values while %s is unreachable): newer values "
                        "are dropped until it returns (raise logger.outage_max_buffered to keep more)",
                        self.max_pending,
                        self.where,
                    )
                self.dropped += len(metrics) - max(room, 0)
                metrics = metrics[: max(room, 0)]
            if self._closed:
                raise RuntimeError("MetricBuffer.put after close: keep the values elsewhere")
            self._pending.extend((run_id, m) for m in metrics)
            if self._thread is None or not self._thread.is_alive():
                logging.getLogger("urllib3.connectionpool").addFilter(_FILTER)
                self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Retry now and wait up to `timeout_s` until everything queued so far is sent; False on timeout."""
        with self._cond:
            self._wake = True
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: not self._pending and not self._busy, timeout=max(0.0, timeout_s)
            )

    def close(self) -> list[tuple[str, Any]]:
        """Stop sending: the values still queued, which the caller keeps elsewhere (iqs.tracking.kept).
        A batch already on the wire may still arrive; the store drops such duplicates (same key, value,
        timestamp and step)."""
        with self._cond:
            self._closed = True
            left = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
            return left

    def _next_batch(self) -> tuple[str, list[Any]]:
        """The oldest values of one run, at most METRICS_PER_BATCH; they stay queued until sent."""
        run_id = self._pending[0][0]
        head = itertools.takewhile(
            lambda item: item[0] == run_id, itertools.islice(self._pending, METRICS_PER_BATCH)
        )
        return run_id, [metric for _, metric in head]

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending) or self._closed)
                if self._closed:
                    return
                run_id, batch = self._next_batch()
                self._busy = True
            error: BaseException | None = None
            try:
                self._send(run_id, batch)
            except Exception as exc:  # noqa: BLE001 - classified below; the thread must live on
                error = exc
            with self._cond:
                self._busy = False
                if self._closed:
                    self._cond.notify_all()
                    return
                if error is not None and is_outage(error):
                    self._on_outage(error)
                    self._cond.notify_all()
                    self._cond.wait_for(lambda: self._wake, timeout=self.retry_interval_s)
                    self._wake = False
                    continue
                for _ in batch:  # only this thread removes values, always from the left
                    self._pending.popleft()
                if error is None:
                    self.sent += len(batch)
                    self._on_success(len(self._pending) + len(batch))
                else:
                    self.dropped += len(batch)
                    log.error("MLflow rejected %d metric values of run %s: %s", len(batch), run_id, error)
                self._cond.notify_all()

    def report_dropped(self, run_id: str) -> None:
        """One line when values were lost (buffer full, or rejected by the server); the run's end calls it."""
        if self.dropped:
            log.warning(
                "%d metric values of MLflow run %s were not stored (metric buffer full during an outage of %s, "
                "or rejected by it; see the warnings above)",
                self.dropped,
                run_id,
                self.where,
            )

    def _on_outage(self, error: BaseException) -> None:
        self.last_error = error
        if self.outage_since is not None:
            return
        self.outage_since = time.monotonic()
        log.warning(
            "MLflow tracking server %s is unreachable (%s). Training continues; metrics are kept in memory "
            "and sent when it returns (retry every %g s).",
            self.where,
            _short(error),
            self.retry_interval_s,
        )

    def _on_success(self, buffered: int) -> None:
        if self.outage_since is None:
            return
        down = time.monotonic() - self.outage_since
        self.outage_since = None
        self._warned_full = False  # a later outage that fills the buffer again says so again
        log.warning(
            "MLflow tracking server %s is back after %.0f s; sending the %d metric values buffered meanwhile",
            self.where,
            down,
            buffered,
        )


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 300 else text[:300] + "..."


class RunKeptLocally(TrackingOutageError):
    """The server stayed down past the grace period: the run's remaining artifacts, metrics and tags are in
    its job folder (iqs.tracking.kept); the message is the one line that says where and how to upload them."""


def _cause(error: BaseException) -> str:
    """The root of an HTTP failure in a few words (`[Errno 111] Connection refused`, `HTTP 503`)."""
    import re

    from mlflow.exceptions import MlflowException

    found = re.search(r"\[Errno -?\d+\] [^'\")\]]+", str(error))
    if found:
        return found.group(0).strip()
    if isinstance(error, MlflowException) and error.get_http_status_code() != 500:
        return f"HTTP {error.get_http_status_code()}"
    return _short(error)[:160]


class BufferedClient(MlflowClient):
    """`MlflowClient` whose metric-only `log_batch` goes through a `MetricBuffer`, and whose other calls
    to a run wait through an outage.

    Every call that writes to or reads a run (artifacts, tags, params, `get_run`, `set_terminated`) is
    retried every `retry_interval_s` while the server is unreachable; reads and the run's end first wait
    for the buffered metrics. One outage costs at most `grace_s` of waiting (ABORT_GRACE_S when the run
    ends FAILED or KILLED). Past it the client gives up on the server for good: what is left to send goes
    into the run's job folder (`keep_locally_in`, iqs.tracking.kept) and `set_terminated` raises
    `RunKeptLocally`, after one last quick try to end the run FAILED (KILLED) with the reason.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        retry_interval_s: float = 15.0,
        grace_s: float = 120.0,
        max_pending: int = 200_000,
    ) -> None:
        super().__init__(tracking_uri)
        self.grace_s = float(grace_s)
        self.retry_interval_s = float(retry_interval_s)
        self.buffer = MetricBuffer(
            self._send, tracking_uri, retry_interval_s=retry_interval_s, max_pending=max_pending
        )
        self._waiting_since: float | None = None  # monotonic start of the current wait for the server
        self.gave_up: str | None = None  # why the client stopped talking to the server
        self._job_dirs: dict[str, Path] = {}
        self._kept: dict[str, Any] = {}  # run id -> KeptRun
        self._seen: dict[str, Any] = {}  # run id -> the last Run read from the server

    def _send(self, run_id: str, metrics: list[Any]) -> None:
        MlflowClient.log_batch(self, run_id, metrics=metrics, synchronous=True)

    # ------------------------------------------------------------ waiting through an outage

    def keep_locally_in(self, run_id: str, job_dir: Path) -> None:
        """Where the run's artifacts go if the server stays down: `<job_dir>/mlflow-pending/`."""
        self._job_dirs[run_id] = Path(job_dir)

    def kept(self, run_id: str) -> Any:
        from iqs.tracking.kept import KeptRun

        if run_id not in self._kept:
            # a run that named no job folder (not from `iqs train`): one of its own under outputs/
            job_dir = self._job_dirs.get(run_id, Path.cwd() / "outputs" / "runs" / run_id)
            self._kept[run_id] = KeptRun(job_dir, run_id, self.tracking_uri)
        return self._kept[run_id]

    def _deadline(self, limit_s: float | None = None) -> float:
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        deadline = self._waiting_since + self.grace_s
        return deadline if limit_s is None else min(deadline, now + limit_s)

    def _give_up(self, error: BaseException | None) -> None:
        if self.gave_up is not None:
            return
        since = self.buffer.outage_since or self._waiting_since or time.monotonic()
        detail = _cause(error) if error is not None else "it did not answer"
        self.gave_up = (
            f"MLflow tracking server {self.tracking_uri} stayed unreachable for {time.monotonic() - since:.0f} s "
            f"(logger.outage_grace_s={self.grace_s:.0f}; {detail})"
        )
        log.warning("%s: the run's remaining artifacts, metrics and tags go to its job folder", self.gave_up)
        left: dict[str, list[Any]] = {}
        for run_id, metric in self.buffer.close():
            left.setdefault(run_id, []).append(metric)
        for run_id, metrics in left.items():
            self.kept(run_id).add_metrics(metrics)

    def _patient(self, what: str, call: Callable[[], Any], *, limit_s: float | None = None) -> Any:
        """`call()`, retried every retry_interval_s through an outage; `TrackingOutageError` once the wait
        passes the grace period (then the client has given up)."""
        if self.gave_up is not None:
            raise TrackingOutageError(self.gave_up)
        warned = False
        while True:
            try:
                result = call()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                deadline = self._deadline(limit_s)
                left = deadline - time.monotonic()
                if left <= 0:
                    self._give_up(exc)
                    raise TrackingOutageError(self.gave_up) from exc
                if not warned:
                    warned = True
                    log.warning(
                        "MLflow tracking server %s cannot be reached while %s (%s); retrying every %g s for up "
                        "to %.0f s more (logger.outage_grace_s)",
                        self.tracking_uri,
                        what,
                        _short(exc),
                        self.retry_interval_s,
                        left,
                    )
                time.sleep(min(self.retry_interval_s, left))
                continue
            if warned:
                log.warning("MLflow tracking server %s answers again; %s done", self.tracking_uri, what)
            self._waiting_since = None
            return result

    def wait_for_metrics(self, run_id: str | None = None, *, limit_s: float | None = None) -> bool:
        """Block until the buffered metrics are stored: True, or False once the client gave up."""
        if self.gave_up is not None:
            return False
        if not len(self.buffer):
            return True
        if self.buffer.flush(max(0.0, self._deadline(limit_s) - time.monotonic())):
            self._waiting_since = None
            return True
        self._give_up(self.buffer.last_error)
        return False

    def give_up_unless_back(self, limit_s: float) -> bool:
        """For a run that is failing or being killed during an outage: wait at most `limit_s` for the
        buffered metrics and the server, else give up at once (its traceback and end then go to the job
        folder without a call). True when the server is there."""
        if self.gave_up is None and self.wait_for_metrics(limit_s=limit_s) and self._answers():
            return True
        self._give_up(self.buffer.last_error)
        return False

    # ------------------------------------------------------------ writes: kept locally past the grace

    def log_batch(  # type: ignore[override]
        self,
        run_id: str,
        metrics: Sequence[Any] = (),
        params: Sequence[Any] = (),
        tags: Sequence[Any] = (),
        synchronous: bool | None = None,
    ) -> Any:
        if metrics and not params and not tags:
            if self.gave_up is not None:
                self.kept(run_id).add_metrics(metrics)
            else:
                self.buffer.put(run_id, list(metrics))
            return None
        try:
            return self._patient(
                "logging tags and params",
                lambda: MlflowClient.log_batch(
                    self, run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous
                ),
            )
        except TrackingOutageError:
            kept = self.kept(run_id)
            kept.add_metrics(metrics)
            kept.add_params({p.key: p.value for p in params})
            kept.add_tags({t.key: t.value for t in tags})
            return None

    def set_tag(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> Any:
        try:
            return self._patient(f"setting tag {key}", lambda: MlflowClient.set_tag(self, run_id, key, value))
        except TrackingOutageError:
            self.kept(run_id).add_tags({key: value})
            return None

    def log_param(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> Any:
        try:
            return self._patient(
                f"logging param {key}", lambda: MlflowClient.log_param(self, run_id, key, value)
            )
        except TrackingOutageError:
            self.kept(run_id).add_params({key: value})
            return value

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        # log_text, log_figure and log_dict write a temporary file and come through here
        name = f"{artifact_path}/{Path(local_path).name}" if artifact_path else Path(local_path).name
        try:
            self._patient(
                f"uploading {name}",
                lambda: MlflowClient.log_artifact(self, run_id, local_path, artifact_path),
            )
        except TrackingOutageError:
            self.kept(run_id).add_artifact(local_path, artifact_path)

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        try:
            self._patient(
                f"uploading {local_dir}",
                lambda: MlflowClient.log_artifacts(self, run_id, local_dir, artifact_path),
            )
        except TrackingOutageError:
            self.kept(run_id).add_artifact(local_dir, artifact_path)

    def log_inputs(self, run_id: str, datasets: Any = None, models: Any = None) -> None:
        try:
            self._patient(
                "logging dataset inputs", lambda: MlflowClient.log_inputs(self, run_id, datasets, models)
            )
        except TrackingOutageError:
            # descriptive only: the data counts and fingerprint are artifacts and tags, kept with the rest
            log.warning("the dataset inputs of MLflow run %s were not logged (server unreachable)", run_id)

    # ------------------------------------------------------------ reads

    def get_run(self, run_id: str) -> Any:
        if self.wait_for_metrics(run_id):
            try:
                run = self._patient("reading the run", lambda: MlflowClient.get_run(self, run_id))
            except TrackingOutageError:
                pass
            else:
                self._seen[run_id] = run
                return run
        return self._local_view(run_id)

    def _local_view(self, run_id: str) -> Any:
        """The run as last read, with what was kept since: what the server will hold after `iqs upload`."""
        from mlflow.entities import Metric, Param, Run, RunData, RunTag

        from iqs.tracking.kept import read_metrics

        seen = self._seen.get(run_id)
        if seen is None:
            raise TrackingOutageError(f"{self.gave_up}: MLflow run {run_id} was never read")
        kept = self.kept(run_id)
        # `RunData.metrics` holds values only; its proto has the Metric entities (steps, timestamps)
        metrics = {m.key: Metric.from_proto(m) for m in seen.data.to_proto().metrics}
        metrics.update({m.key: m for m in read_metrics(kept.job_dir)})
        params = {**seen.data.params, **kept.record.params}
        tags = {**seen.data.tags, **kept.record.tags}
        data = RunData(
            metrics=[Metric(m.key, m.value, m.timestamp, m.step) for m in metrics.values()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        return Run(seen.info, data, seen.inputs)

    def get_metric_history(self, run_id: str, key: str) -> Any:
        if not self.wait_for_metrics(run_id):
            raise TrackingOutageError(self.gave_up)
        return self._patient(f"reading {key}", lambda: MlflowClient.get_metric_history(self, run_id, key))

    def update_run(self, run_id: str, status: str | None = None, name: str | None = None) -> None:
        self._patient("updating the run", lambda: MlflowClient.update_run(self, run_id, status, name))

    # ------------------------------------------------------------ the end

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        # a run ending FAILED or KILLED (a signal: SLURM sends SIGKILL 30 s after SIGTERM by default) waits
        # at most ABORT_GRACE_S, so that it can still exit on its own
        finished = status in (None, "FINISHED")
        limit = None if finished else ABORT_GRACE_S
        try:
            if self.wait_for_metrics(run_id, limit_s=limit):
                self._patient(
                    "ending the run",
                    lambda: MlflowClient.set_terminated(self, run_id, status, end_time),
                    limit_s=limit,
                )
                return
        except TrackingOutageError:
            pass
        finally:
            self.buffer.report_dropped(run_id)
        self._end_kept(run_id, "FAILED" if finished else str(status), finished)

    def _end_kept(self, run_id: str, status: str, finished: bool) -> None:
        """Record how the run must end, try once (no wait) to end it so, and raise `RunKeptLocally`."""
        from mlflow.entities import RunTag

        from iqs.tracking.kept import upload_command
        from iqs.tracking.liveness import ENDED_BY_TAG

        kept = self.kept(run_id)
        kept.record.status, kept.record.finished = status, finished
        kept.record.reason = f"{self.gave_up}; the rest of the run is kept in {kept.folder}"
        kept.save()
        n_files, n_metrics = kept.counts()
        tags = {
            "error": f"TrackingOutageError: {kept.record.reason}",
            ENDED_BY_TAG: "its own process, after a tracking-server outage: " + upload_command(kept.job_dir),
        }
        if self._answers():  # the server may be back: one bounded try, no waiting
            try:
                batch = [RunTag(k, v) for k, v in tags.items()]
                MlflowClient.log_batch(self, run_id, tags=batch, synchronous=True)
                MlflowClient.set_terminated(self, run_id, status)
                kept.record.ended = True
                kept.save()
            except Exception as exc:  # noqa: BLE001 - the record says what to do; liveness ends it later
                log.warning("could not end MLflow run %s as %s: %s", run_id, status, _short(exc))
        ended = (
            f"ended {status}"
            if kept.record.ended
            else f"is ended {status} by the next `iqs train` or `iqs compare` on this host once the server answers"
        )
        raise RunKeptLocally(
            f"{self.gave_up}: run {run_id} {ended}; {n_files} artifact files and {n_metrics} metric values "
            f"are kept in {kept.folder}; upload them with: {upload_command(kept.job_dir)}"
        )

    def _answers(self) -> bool:
        """Whether the server answers its health check within 3 s (one try)."""
        import requests

        try:
            return requests.get(f"{self.tracking_uri.rstrip('/')}/health", timeout=3).ok
        except requests.exceptions.RequestException:
            return False
