"""Training never waits for a tracking server: metrics are buffered while it is down and sent when it returns.

The behaviour (documented in docs/running-at-scale/tracking-server.md):

- During training, metric batches (Lightning's `self.log`, `TrackedRun.log_metrics`) go to a queue that one
  background thread sends to the server. Training never waits for the network.
- When the server cannot be reached the thread logs ONE warning (where, since when, what happens next),
  keeps every value in memory (up to `logger.outage_max_buffered` values; newer ones are then dropped and
  counted, and the count is logged when the run ends) and retries every `logger.outage_retry_s`. When a retry succeeds it logs one line ("back after
  N s, sent M buffered values") and the run holds every metric, with its original step and timestamp.
- Every other call (run creation, params, tags, artifacts, reading the run back) stays synchronous and is
  bounded by MLflow's own HTTP settings (iqs.tracking.http_settings). Before the run is read back or ended,
  the queue must drain: the client waits up to `logger.outage_grace_s` for the server (at most
  ABORT_GRACE_S when the run ends FAILED or KILLED), then raises `TrackingOutageError`, so a run whose
  server stays down fails within a stated time instead of hanging.

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
from typing import Any

from mlflow import MlflowClient

log = logging.getLogger(__name__)

THREAD_NAME = "iqs-mlflow-metrics"
METRICS_PER_BATCH = 1000  # MLflow's limit of metrics per log_batch (mlflow.utils.validation)
ABORT_GRACE_S = 10.0  # longest wait for buffered metrics when a run ends FAILED or KILLED


class TrackingOutageError(RuntimeError):
    """The tracking server stayed unreachable past the grace period; buffered metrics were not stored."""


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
                self._cond.wait_for(lambda: bool(self._pending))
                run_id, batch = self._next_batch()
                self._busy = True
            error: BaseException | None = None
            try:
                self._send(run_id, batch)
            except Exception as exc:  # noqa: BLE001 - classified below; the thread must live on
                error = exc
            with self._cond:
                self._busy = False
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


class BufferedClient(MlflowClient):
    """`MlflowClient` whose metric-only `log_batch` goes through a `MetricBuffer`.

    Reads of a run (`get_run`, `get_metric_history`) and `set_terminated` first wait for the buffer (at most
    `grace_s` in all for one outage), so the run read back or ended holds every metric logged before.
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
        self._grace_spent = False
        self.buffer = MetricBuffer(
            self._send, tracking_uri, retry_interval_s=retry_interval_s, max_pending=max_pending
        )

    def _send(self, run_id: str, metrics: list[Any]) -> None:
        MlflowClient.log_batch(self, run_id, metrics=metrics, synchronous=True)

    def log_batch(  # type: ignore[override]
        self,
        run_id: str,
        metrics: Sequence[Any] = (),
        params: Sequence[Any] = (),
        tags: Sequence[Any] = (),
        synchronous: bool | None = None,
    ) -> Any:
        if metrics and not params and not tags:
            self.buffer.put(run_id, list(metrics))
            return None
        return super().log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous)

    def wait_for_metrics(self, run_id: str | None = None, *, grace_s: float | None = None) -> None:
        """Block until the buffered metrics are stored; `TrackingOutageError` once the grace period is spent."""
        if not len(self.buffer):
            return
        # one grace period per client: a failing run's clean-up calls (traceback, end) must not wait again
        grace_s = self.grace_s if grace_s is None else min(grace_s, self.grace_s)
        if self.buffer.flush(0.0 if self._grace_spent else grace_s):
            return
        self._grace_spent = True
        if self.buffer.outage_since is not None and self.buffer.last_error is not None:
            down = time.monotonic() - self.buffer.outage_since
            state = f"has been unreachable for {down:.0f} s ({_short(self.buffer.last_error)})"
        else:  # the first attempt is still in its HTTP retries
            state = "did not answer"
        raise TrackingOutageError(
            f"MLflow tracking server {self.tracking_uri} {state}; "
            f"{len(self.buffer)} metric values"
            + (f" of run {run_id}" if run_id else "")
            + f" could not be stored within logger.outage_grace_s={self.grace_s:.0f} s. "
            "The run's local outputs (checkpoints, test_predictions.csv, run.log) are kept in its output folder; "
            "the run stays RUNNING on the server until the next `iqs train` or `iqs compare` on this host marks it "
            "KILLED. Bring the server back and rerun, or raise logger.outage_grace_s."
        )

    def get_run(self, run_id: str) -> Any:
        self.wait_for_metrics(run_id)
        return super().get_run(run_id)

    def get_metric_history(self, run_id: str, key: str) -> Any:
        self.wait_for_metrics(run_id)
        return super().get_metric_history(run_id, key)

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        # a run ending FAILED or KILLED (a signal: SLURM sends SIGKILL 30 s after SIGTERM by default) waits
        # at most ABORT_GRACE_S for its metrics, so that it can still exit on its own
        finished = status in (None, "FINISHED")
        try:
            self.wait_for_metrics(run_id, grace_s=None if finished else ABORT_GRACE_S)
        finally:
            self.buffer.report_dropped(run_id)
        super().set_terminated(run_id, status, end_time)
