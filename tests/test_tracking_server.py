"""A tracking server that dies mid-run: bounded HTTP calls, training goes on, metrics arrive after a restart,
and whatever cannot be sent waits in the job folder for `iqs upload`.

The slow tests run `iqs train` against a real `mlflow server` (127.0.0.1, SQLite backend, proxied artifacts
in tmp) that they stop after the first epoch or after fitting, and restart or leave down; the fast ones use
a port nobody listens on.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric
from urllib3.util.retry import Retry

from iqs.tracking import outage as outage_module
from iqs.tracking.experiment import make_client
from iqs.tracking.http_settings import HttpSettings, apply_http_settings
from iqs.tracking.outage import THREAD_NAME, BufferedClient, RunKeptLocally, TrackingOutageError
from test_train import _isolated_tracking, demo_sources, run_train, shrink, tiny_demo  # noqa: F401

HTTP_VARS = (
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` in its own process group, as a team would run it (see docs/running-at-scale)."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # IQS_TEST_MLFLOW: another installation's `mlflow` executable (e.g. an MLflow 2.x server in its own venv)
        mlflow = os.environ.get("IQS_TEST_MLFLOW", "").split() or [sys.executable, "-m", "mlflow"]
        cmd = [*mlflow, "server", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--backend-store-uri", f"sqlite:///{self.root}/mlflow.db"]
        cmd += ["--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server process owns it
        # the server's job runner (huey consumers for GenAI scoring) only slows start-up here
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )

    def wait_up(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, (self.root / "server.log").read_text()[
                -3000:
            ]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"mlflow server did not answer within {timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # uvicorn runs as a child of `mlflow server`
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, migrated_db):
    server = Server(tmp_path_factory.mktemp("mlflow-server"))
    shutil.copy(migrated_db, server.root / "mlflow.db")  # its backend store, migrated once per session
    server.start()
    server.wait_up()
    yield server
    server.stop()


@pytest.fixture
def http_env(monkeypatch):
    """MLflow's HTTP variables restored after the test (apply_http_settings exports them)."""
    for var in HTTP_VARS:
        monkeypatch.delenv(var, raising=False)
    yield
    for var in HTTP_VARS:
        os.environ.pop(var, None)


def test_config_sets_mlflow_http_variables_unless_the_user_did(http_env, monkeypatch):
    cfg = {"logger": {"http_timeout_s": 7, "http_max_retries": 2, "http_backoff_factor": 1}}
    settings = apply_http_settings(cfg)
    assert (settings.timeout_s, settings.max_retries, settings.backoff_factor) == (7, 2, 1)
    assert [os.environ[v] for v in HTTP_VARS] == ["7", "2", "1"]
    # a later config (next job of a sweep) changes what this module exported ...
    assert apply_http_settings({"logger": {"http_timeout_s": 9}}).timeout_s == 9
    # ... but never a variable the user exported
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    assert apply_http_settings(cfg).max_retries == 5 and os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    with pytest.raises(ValueError, match="logger.http_timeout_s must be a whole number"):
        apply_http_settings({"logger": {"http_timeout_s": 2.5}})


@pytest.mark.parametrize(("retries", "factor"), [(3, 1), (7, 2), (0, 1)])
def test_worst_case_matches_urllib3_backoff(retries, factor):
    """The stated bound of one call is urllib3's own backoff schedule (jitter off) plus a timeout per attempt."""
    retry, slept = Retry(total=retries, connect=retries, backoff_factor=factor, backoff_jitter=0.0), 0.0
    for _ in range(retries):
        retry = retry.increment(method="POST", url="/", error=ConnectionRefusedError())
        slept += retry.get_backoff_time()
    settings = HttpSettings(timeout_s=20, max_retries=retries, backoff_factor=factor, backoff_jitter=0.0)
    assert settings.worst_case_s(unresponsive=False) == pytest.approx(slept)
    assert settings.worst_case_s() == pytest.approx(slept + 20 * (retries + 1))
    # MLflow's defaults (7 retries, factor 2): about 4 minutes against a refused connection, issue 12's hang
    if (retries, factor) == (7, 2):
        assert slept > 240


@pytest.mark.slow
def test_dead_server_buffers_warns_once_and_fails_within_the_grace(http_env, caplog, monkeypatch, tmp_path):
    """No server at all: logging never blocks, one warning, and the run's end gives up after the grace
    period, keeping the metric values in the job folder."""
    from iqs.tracking.kept import read_metrics, read_record

    uri = f"http://127.0.0.1:{free_port()}"
    cfg = {"logger": {"http_timeout_s": 2, "http_max_retries": 1, "http_backoff_factor": 1}}
    cfg["logger"] |= {"outage_retry_s": 0.2, "outage_grace_s": 2}
    apply_http_settings(cfg)  # what tracking_uri_for does for every command
    client = make_client(cfg, uri)
    assert isinstance(client, BufferedClient)
    client.keep_locally_in("run0", tmp_path / "job0")
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    for step in range(300):  # e.g. 300 training steps during the outage
        client.log_batch("run0", metrics=[Metric("train/loss", 1.0 / (step + 1), 0, step)])
    assert time.monotonic() - started < 1.0  # the training loop never waited for the network
    started = time.monotonic()
    with pytest.raises(RunKeptLocally, match=r"unreachable .*run run0 .* 300 metric values") as err:
        client.set_terminated("run0", "FINISHED")
    waited = time.monotonic() - started
    assert 2 <= waited < 2 + HttpSettings.current().worst_case_s() + 4, waited
    assert "logger.outage_grace_s=2" in str(err.value) and uri in str(err.value)
    assert "\n" not in str(err.value) and f"iqs upload job_dir={tmp_path / 'job0'}" in str(err.value)
    assert [m.step for m in read_metrics(tmp_path / "job0")] == list(range(300))
    record = read_record(tmp_path / "job0")
    assert (record.run_id, record.status, record.finished, record.ended) == ("run0", "FAILED", True, False)
    # the failing run's clean-up (traceback, end) does not wait a second grace period
    started = time.monotonic()
    with pytest.raises(TrackingOutageError):
        client.get_run("run0")
    assert time.monotonic() - started < 0.5
    outage = [r for r in caplog.records if "is unreachable" in r.getMessage()]
    assert len(outage) == 1 and uri in outage[0].getMessage()

    # a run ending KILLED or FAILED (a signal, an error) waits at most ABORT_GRACE_S, not outage_grace_s
    monkeypatch.setattr(outage_module, "ABORT_GRACE_S", 0.5)
    client = make_client({"logger": {**cfg["logger"], "outage_grace_s": 600}}, uri)
    client.keep_locally_in("run1", tmp_path / "job1")
    client.log_batch("run1", metrics=[Metric("train/loss", 1.0, 0, 0)])
    started = time.monotonic()
    with pytest.raises(RunKeptLocally, match="run run1 is ended KILLED .* 1 metric values"):
        client.set_terminated("run1", "KILLED")
    assert time.monotonic() - started < 0.5 + HttpSettings.current().worst_case_s() + 2
    assert not [
        r for r in caplog.records if r.threadName.startswith(THREAD_NAME) and r.name.startswith("urllib3")
    ]


class ServerOutage:
    """Lightning callback: stops the server after the first training epoch; with `restart`, starts it again
    at the end of the second epoch once the client has reported the outage (a server restarted before the
    next metric call would hide it), while training goes on. Records when training went on and ended."""

    def __init__(self, server: Server, *, restart: bool = True) -> None:
        self.server, self.restart = server, restart
        self.stopped_at: float | None = None
        self.epochs_during_outage = 0
        self.train_end: float | None = None
        self.waited_for_report_s = 0.0  # training time spent waiting for the outage warning
        self.reported = threading.Event()
        self._handler: logging.Handler | None = None

    def as_callback(self):
        import pytorch_lightning as pl

        outer = self

        class _Reported(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "is unreachable" in record.getMessage():
                    outer.reported.set()

        class _Callback(pl.Callback):
            def on_train_epoch_end(self, trainer, pl_module) -> None:
                if outer.stopped_at is None:
                    outer._handler = _Reported()
                    logging.getLogger(outage_module.__name__).addHandler(outer._handler)
                    outer.server.stop()
                    outer.stopped_at = time.monotonic()
                    return
                outer.epochs_during_outage += 1
                if outer.restart and outer.epochs_during_outage == 1:
                    started = time.monotonic()
                    assert outer.reported.wait(60), "no metric call noticed the stopped server"
                    outer.waited_for_report_s = time.monotonic() - started
                    outer.server.start()  # comes up while training goes on

            def on_train_end(self, trainer, pl_module) -> None:
                outer.train_end = time.monotonic()
                logging.getLogger(outage_module.__name__).removeHandler(outer._handler)

        return _Callback()


def with_outage(monkeypatch: pytest.MonkeyPatch, outage: ServerOutage) -> None:
    import iqs.train.build as build

    make_callbacks = build.callbacks
    monkeypatch.setattr(
        build, "callbacks", lambda cfg, out: {**make_callbacks(cfg, out), "outage": outage.as_callback()}
    )


@pytest.mark.slow
def test_training_goes_on_through_a_server_restart(
    mlflow_server,
    tiny_demo,  # noqa: F811 - the fixture imported from test_train
    tmp_path,
    http_env,
    monkeypatch,
    caplog,
):
    outage = ServerOutage(mlflow_server)
    with_outage(monkeypatch, outage)
    caplog.set_level(logging.WARNING)
    epochs = 4
    ov = shrink(tmp_path, *demo_sources(tiny_demo), "experiment=demo", epochs=epochs)
    ov += [f"logger.tracking_uri={mlflow_server.uri}", "logger.outage_retry_s=1", "logger.outage_grace_s=300"]
    ov += ["callbacks.early_stopping.enabled=false"]
    started = time.monotonic()
    metrics, objs = run_train(ov)
    wall = time.monotonic() - started

    print(
        f"server stopped {outage.stopped_at - started:.1f} s into the run; training ended "
        f"{outage.train_end - outage.stopped_at:.1f} s later; run ended after {wall:.1f} s"
    )
    # training went on while the server was down: 3 epochs after the stop, no retry series in between
    assert outage.stopped_at is not None and outage.epochs_during_outage == epochs - 1
    assert outage.train_end - outage.stopped_at - outage.waited_for_report_s < 30, (
        "training waited for the server"
    )
    # reported once, and once more when it came back
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is unreachable" in m for m in messages) == 1, messages
    assert sum("is back after" in m for m in messages) == 1, messages
    assert not [
        r for r in caplog.records if r.name.startswith("urllib3") and r.threadName.startswith(THREAD_NAME)
    ]
    assert wall < 300, wall

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(objs["run_id"])
    assert run.info.status == "FINISHED"
    # every epoch's validation metric, including those logged while the server was down, is stored once
    history = client.get_metric_history(run.info.run_id, "val/all/srcc")
    assert len(history) == epochs and len({m.step for m in history}) == epochs
    assert run.data.metrics["test/all/srcc"] == pytest.approx(metrics["test/all/srcc"])
    assert "time/total_s" in run.data.metrics
    # artifacts went through the server's proxy into its --artifacts-destination, not the client's mlruns/
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model_card.md", "config.yaml", "predictions"} <= names
    assert list((mlflow_server.root / "artifacts").rglob("model_card.md"))
    assert not (tmp_path / "mlruns").exists()


class StopAfterFit:
    """Lightning callback: stops the server when testing ends (fitting done, the test metrics stored, the
    test artifacts not yet uploaded: where issue 23's run crashed and stayed RUNNING), so the next calls are
    the synchronous ones; with `restart_after_s`, starts it again that many seconds later from a thread."""

    def __init__(self, server: Server, restart_after_s: float | None = None) -> None:
        self.server, self.restart_after_s = server, restart_after_s
        self.stopped_at: float | None = None

    def as_callback(self):
        import pytorch_lightning as pl

        outer = self

        class _Callback(pl.Callback):
            def on_test_end(self, trainer, pl_module) -> None:
                assert trainer.logger.experiment.wait_for_metrics()  # the run's BufferedClient
                outer.server.stop()
                outer.stopped_at = time.monotonic()
                if outer.restart_after_s is not None:
                    threading.Timer(outer.restart_after_s, outer.server.start).start()

        return _Callback()


@pytest.mark.slow
def test_a_server_down_after_fitting_and_back_within_the_grace_gets_every_artifact(
    mlflow_server,
    tiny_demo,  # noqa: F811 - the fixture imported from test_train
    tmp_path,
    http_env,
    monkeypatch,
    caplog,
):
    """The uploads wait for the server (retried every outage_retry_s) and the run ends FINISHED."""
    mlflow_server.wait_up()
    outage = StopAfterFit(mlflow_server, restart_after_s=2)
    with_outage(monkeypatch, outage)
    caplog.set_level(logging.WARNING)
    ov = shrink(tmp_path, *demo_sources(tiny_demo), "experiment=demo", "logger.plots=true", epochs=2)
    ov += [f"logger.tracking_uri={mlflow_server.uri}", "logger.outage_retry_s=1", "logger.outage_grace_s=300"]
    metrics, objs = run_train(ov)
    print(f"the run ended {time.monotonic() - outage.stopped_at:.1f} s after the server was stopped")

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(objs["run_id"])
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model_card.md", "predictions", "plots", "checkpoints"} <= names
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/label_hist_train_demo_spaq.png" in plots  # the upload that crashed issue 23's run
    assert run.data.metrics["test/all/srcc"] == pytest.approx(metrics["test/all/srcc"])
    assert not (tmp_path / "out" / "mlflow-pending").exists()
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot be reached while" in m for m in messages), messages
    assert any("answers again" in m for m in messages), messages


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
def test_a_server_that_stays_down_keeps_the_run_locally_until_upload(
    mlflow_server,
    tiny_demo,  # noqa: F811 - the fixture imported from test_train
    tmp_path,
    http_env,
    monkeypatch,
):
    """Down from the second epoch on, past the grace: the run's files stay in the job folder, one line says
    where and how to upload them; with the server back the run ends FAILED (its process is gone), and
    `iqs upload` sends everything and ends it FINISHED."""
    from iqs.cli import main
    from iqs.tracking.kept import read_metrics, read_record
    from iqs.tracking.liveness import PID_TAG, mark_dead_runs

    mlflow_server.wait_up()
    outage = ServerOutage(mlflow_server, restart=False)
    with_outage(monkeypatch, outage)
    ov = shrink(tmp_path, *demo_sources(tiny_demo), "experiment=demo", "logger.plots=true", epochs=2)
    ov += [f"logger.tracking_uri={mlflow_server.uri}", "logger.outage_retry_s=1", "logger.outage_grace_s=3"]
    ov += ["callbacks.early_stopping.enabled=false"]
    with pytest.raises(RunKeptLocally, match=f"{mlflow_server.uri} stayed unreachable") as err:
        run_train(ov)
    failed_after = time.monotonic() - outage.train_end
    # the grace period, the test stage, and one health check of at most 3 s; no call waits beyond
    bound = 3 + 3 + HttpSettings.current().worst_case_s(unresponsive=False) + 30  # + testing under load
    print(f"training ended; the run gave up {failed_after:.1f} s later (bound {bound:.0f} s): {err.value}")
    assert outage.stopped_at is not None and failed_after < bound
    job, line = tmp_path / "out", str(err.value)
    assert "\n" not in line and "outage_grace_s=3" in line and f"iqs upload job_dir={job}" in line
    kept = job / "mlflow-pending"
    assert f"are kept in {kept}" in line
    for name in ("model_card.md", "predictions/test_predictions.csv", "plots/label_hist_train_demo_spaq.png"):
        assert (kept / "artifacts" / name).is_file(), name
    record = read_record(job)
    assert (record.status, record.finished, record.ended) == ("FAILED", True, False)
    assert any(m.key == "test/all/srcc" for m in read_metrics(job))

    mlflow_server.start()
    mlflow_server.wait_up()
    client = MlflowClient(mlflow_server.uri)
    assert client.get_run(record.run_id).info.status == "RUNNING"  # this process still runs
    client.set_tag(record.run_id, PID_TAG, str(_dead_pid()))  # as after the job's process exited
    assert mark_dead_runs(client) == [record.run_id]
    run = client.get_run(record.run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("TrackingOutageError: ")
    assert f"iqs upload job_dir={job}" in run.data.tags["iqs.ended_by"]

    assert main(["upload", f"job_dir={job}"]) == 0
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED" and not {"error", "iqs.ended_by"} & set(run.data.tags)
    assert "kept through an outage" in run.data.tags["iqs.uploaded"]
    assert {"model_card.md", "predictions", "plots"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }
    history = client.get_metric_history(run.info.run_id, "val/all/srcc")
    assert sorted(m.step for m in history) == sorted({m.step for m in history}) and len(history) == 2
    assert "test/all/srcc" in run.data.metrics and not kept.exists()


def test_buffer_keeps_order_through_an_outage_caps_memory_and_drops_rejected_batches(caplog):
    """MetricBuffer alone, with a fake server: down, then up; a full buffer; a 4xx answer."""
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from iqs.tracking.outage import MetricBuffer

    caplog.set_level(logging.WARNING)
    stored: list[tuple[str, int]] = []
    server = {"up": False}

    def send(run_id: str, metrics: list) -> None:
        if not server["up"]:
            raise requests.exceptions.ConnectionError("connection refused")
        if any(m.key == "bad" for m in metrics):
            raise MlflowException("metric value rejected", error_code=INVALID_PARAMETER_VALUE)
        stored.extend((run_id, m.step) for m in metrics)

    buffer = MetricBuffer(send, "fake://server", retry_interval_s=0.05, max_pending=25)
    for step in range(30):  # 30 values into a buffer of 25 while the server is down
        buffer.put("a" if step < 20 else "b", [Metric("loss", 0.5, 0, step)])
    assert not buffer.flush(0.3) and len(buffer) == 25 and buffer.dropped == 5
    server["up"] = True
    assert buffer.flush(5)
    # every kept value arrived once, in logging order, each with its own run id
    assert stored == [("a", s) for s in range(20)] + [("b", s) for s in range(20, 25)]
    # a batch the server rejects (4xx: a deleted run, an invalid value) is dropped, not retried forever
    buffer.put("a", [Metric("bad", 0.0, 0, 0)])
    assert buffer.flush(5) and buffer.dropped == 6
    buffer.put("a", [Metric("loss", 0.1, 0, 99)])
    assert buffer.flush(5) and stored[-1] == ("a", 99)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("buffer full" in m for m in messages) == 1
    assert sum(m.startswith("MLflow tracking server fake://server is unreachable") for m in messages) == 1
    assert sum("is back after" in m and "sending the 25 metric values" in m for m in messages) == 1
    assert sum("rejected 1 metric values" in m for m in messages) == 1


@pytest.mark.slow
def test_a_run_failing_during_an_outage_keeps_its_traceback_and_end_in_the_job_folder(
    http_env, caplog, monkeypatch, tmp_path
):
    """No call to a server known to be down: the failing run waits at most ABORT_GRACE_S, then its traceback,
    error tags and end go to the job folder, and `_fail` hands back the one line that says so."""
    from types import SimpleNamespace

    import pytorch_lightning  # noqa: F401 - _fail imports it (is_interruption); loaded before the timing

    from iqs.core.signals import Interrupted
    from iqs.tracking.kept import PENDING_DIR, read_record
    from iqs.tracking.mlflow_run import TrackedRun, _fail

    uri = f"http://127.0.0.1:{free_port()}"
    cfg = {
        "logger": {
            "http_timeout_s": 2,
            "http_max_retries": 1,
            "http_backoff_factor": 1,
            "outage_retry_s": 0.2,
        }
    }
    apply_http_settings(cfg)
    monkeypatch.setattr(outage_module, "ABORT_GRACE_S", 0.5)
    info = SimpleNamespace(run_id="run0", experiment_id="0", run_name="r", artifact_uri="mlflow-artifacts:/0")
    caplog.set_level(logging.WARNING)
    for exc, status in ((RuntimeError("loss exploded"), "FAILED"), (Interrupted(signal.SIGTERM), "KILLED")):
        client = make_client(cfg, uri)
        run = TrackedRun(client, SimpleNamespace(info=info), "e", "none", cfg)
        job = tmp_path / status
        run.keep_locally_in(job)
        client.buffer.put("run0", [Metric("train/loss", 1.0, 0, 0)])
        deadline = time.monotonic() + 10  # the metric queue notices the outage (a refused connection)
        while client.buffer.outage_since is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.buffer.outage_since is not None
        caplog.clear()
        started = time.monotonic()
        kept = _fail(run, exc)
        assert time.monotonic() - started < 0.5 + 3 + 2  # ABORT_GRACE_S + the health check + load
        assert isinstance(kept, RunKeptLocally) and f"run run0 is ended {status}" in str(kept)
        folder = job / PENDING_DIR
        assert type(exc).__name__ in (folder / "artifacts" / "traceback.txt").read_text()
        record = read_record(job)
        assert (record.status, record.finished) == (status, False)
        assert record.tags["error"].startswith(type(exc).__name__)
        messages = [r.getMessage() for r in caplog.records]
        assert any("traceback of run run0 goes to its job folder" in m and uri in m for m in messages)


@pytest.mark.slow
def test_a_second_outage_warns_again_and_the_end_reports_lost_values(http_env, caplog, monkeypatch):
    from iqs.tracking.outage import MetricBuffer

    caplog.set_level(logging.WARNING)
    server = {"up": False}

    def send(run_id: str, metrics: list) -> None:
        if not server["up"]:
            import requests

            raise requests.exceptions.ConnectionError("connection refused")

    buffer = MetricBuffer(send, "fake://server", retry_interval_s=0.05, max_pending=2)
    for outage in range(2):
        server["up"] = False
        buffer.put("a", [Metric("loss", 0.5, 0, s) for s in range(3)])  # one value too many
        assert not buffer.flush(0.2)
        server["up"] = True
        assert buffer.flush(5), outage
    assert buffer.dropped == 2
    assert sum("buffer full" in r.getMessage() for r in caplog.records) == 2

    # the run's end says how many values were lost, even when it fails for the outage
    apply_http_settings({"logger": {"http_timeout_s": 2, "http_max_retries": 0, "http_backoff_factor": 0}})
    monkeypatch.setattr(outage_module, "ABORT_GRACE_S", 0.2)
    client = BufferedClient(f"http://127.0.0.1:{free_port()}", retry_interval_s=0.1, max_pending=1)
    client.log_batch("run0", metrics=[Metric("loss", 0.5, 0, s) for s in range(3)])
    caplog.clear()
    with pytest.raises(TrackingOutageError):
        client.set_terminated("run0", "KILLED")
    lost = [r.getMessage() for r in caplog.records if "were not stored" in r.getMessage()]
    assert len(lost) == 1 and lost[0].startswith("2 metric values of MLflow run run0"), lost
