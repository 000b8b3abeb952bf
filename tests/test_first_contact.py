"""A tracking server that is not there is told in one line (which URI, unreachable, the two ways out), not as
Hydra's chain of urllib3/requests/MLflow tracebacks; HYDRA_FULL_ERROR=1 keeps the traceback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from iqs import cli
from iqs.tracking.store import TrackingUnreachableError, unreachable_server
from iqs.train.user_errors import user_error

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dead_uri(monkeypatch: pytest.MonkeyPatch) -> str:
    """A tracking URI where nothing listens (a port just freed); MLflow gives up at the first refusal."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    return f"http://127.0.0.1:{port}"


def assert_one_line(err: str, command: str, uri: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"{command}: error: the MLflow tracking server {uri} is unreachable"), line
    assert "connection refused" in line
    port = uri.rsplit(":", 1)[1]
    assert (
        f"`mlflow server --host 127.0.0.1 --port {port} --backend-store-uri sqlite:///mlruns/mlflow.db`"
        in line
    )
    assert "drop logger.tracking_uri= and unset MLFLOW_TRACKING_URI" in line and "Traceback" not in err


def test_mlflows_connection_error_is_recognised(dead_uri: str) -> None:
    with pytest.raises(Exception) as raised:  # noqa: B017 - whatever MLflow raises, its chain is read
        MlflowClient(dead_uri).get_experiment_by_name("iqs-digikam")
    told = unreachable_server(raised.value)
    assert isinstance(told, TrackingUnreachableError) and told.uri == dead_uri
    assert told.__cause__ is raised.value  # the traceback stays with it (log file, HYDRA_FULL_ERROR=1)
    assert user_error(raised.value) is not None
    # anything else is not mistaken for it: a bug keeps its traceback
    assert unreachable_server(ValueError("bad")) is None and user_error(KeyError("x")) is None
    try:
        raise RuntimeError("wrapped") from ConnectionRefusedError(111, "refused")
    except RuntimeError as exc:
        assert unreachable_server(exc) is None  # not a request to a tracking server


@pytest.mark.parametrize("command", ["compare", "ui"])
@pytest.mark.slow
def test_commands_report_an_unreachable_store_in_one_line(dead_uri: str, command: str, capsys) -> None:
    assert cli.main([command, f"logger.tracking_uri={dead_uri}"]) == 1
    out, err = capsys.readouterr()
    assert_one_line(err, f"iqs {command}", dead_uri)


@pytest.mark.slow
def test_full_error_keeps_the_traceback(dead_uri: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    assert cli.main(["compare", f"logger.tracking_uri={dead_uri}"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConnectionRefusedError" in err and "MlflowException" in err
    assert err.rstrip().splitlines()[-1].startswith("iqs compare: error: the MLflow tracking server")


@pytest.mark.slow
def test_train_against_a_dead_server_says_it_in_one_line(dead_uri: str, tmp_path: Path) -> None:
    """The README's first command with a server URI that nothing answers."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "iqs.cli",
            "train",
            "experiment=demo",
            f"logger.tracking_uri={dead_uri}",
            f"hydra.run.dir={tmp_path}/run",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Error executing job" not in proc.stderr and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error:" in line or "Error" in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert_one_line(errors[0], "iqs train", dead_uri)


@pytest.mark.slow
def test_a_run_or_model_the_store_lacks_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, migrated_db: Path
) -> None:
    """README commands with an id from another store or a typo: `iqs export run_id=...`, `iqs predict
    model=models:/...`."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    uri = f"sqlite:///{shutil.copy(migrated_db, tmp_path)}"
    MlflowClient(uri).create_experiment("iqs-digikam")
    capsys.readouterr()  # MLflow's own messages about creating the store
    assert cli.main(["export", "run_id=0123456789abcdef", f"logger.tracking_uri={uri}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("iqs export: error: Run with id=0123456789abcdef not found in this MLflow store"), (
        err
    )
    assert "\n" not in err and "`iqs compare` and `make ui` list the tracked runs" in err
    photos = tmp_path / "photos"
    photos.mkdir()
    assert (
        cli.main(["predict", str(photos), "model=models:/iqs-digikam@shipped", f"logger.tracking_uri={uri}"])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "iqs predict: error: models:/iqs-digikam@shipped: no registered model 'iqs-digikam'"
    ), err
    assert "\n" not in err
