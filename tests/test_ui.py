"""`iqs ui` lands on the experiment's runs table with the useful columns, and the exported model is a model of
the run (the table's Models column); checked in a real headless Chromium where one is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from iqs import cli
from iqs.core.config import compose
from iqs.report import ui
from iqs.tracking.experiment import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, ensure_experiment
from iqs.tracking.model_registry import LOGGED_MODEL_NAME, log_export

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=2400,1200",  # wide enough that the grid renders every selected column
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tracked_run(uri: str, srcc: float = 0.6543) -> tuple[str, str]:
    """(experiment id, run id): an experiment made as `iqs train` makes it, and one finished run with the
    research-axis tags and a test metric."""
    client = MlflowClient(uri)
    exp_id = ensure_experiment(client, "iqs-digikam", None)
    axes = {"head": "ordinal", "data": "demo", "thresholds": "4.5_6.5", "rebalance": "sampler"}
    run = client.create_run(exp_id, run_name="ordinal-sampler-t4.5_6.5-demo", tags={**axes, "backbone": "b0"})
    client.log_metric(run.info.run_id, "test/all/srcc", srcc)
    client.set_terminated(run.info.run_id)
    return exp_id, run.info.run_id


@pytest.mark.slow
def test_ui_prints_the_runs_table_with_the_configured_view(tmp_path: Path, capsys, migrated_db: Path) -> None:
    uri = f"sqlite:///{shutil.copy(migrated_db, tmp_path)}"
    exp_id, _ = tracked_run(uri)
    assert cli.main(["ui", "dry_run=true", "port=5099", f"logger.tracking_uri={uri}"]) == 0
    out = capsys.readouterr().out
    url = re.search(r"UI: (\S+)", out)[1]
    key = re.fullmatch(rf"http://127\.0\.0\.1:5099/#/experiments/{exp_id}/runs\?viewStateShareKey=(\S+)", url)
    assert key, url
    # the shared view the UI applies: conf/ui.yaml's columns and order, stored as the UI reads it
    tags = MlflowClient(uri).get_experiment(exp_id).tags
    view = json.loads(tags[ui.SHARED_VIEW_TAG + key[1]])
    cfg = compose("ui")
    assert view["selectedColumns"] == list(cfg.columns)
    assert "metrics.`test/all/srcc`" in view["selectedColumns"] and "tags.`head`" in view["selectedColumns"]
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`test/all/srcc`", False)
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    # the same view again reuses its tag; another view gets its own key
    assert ui.runs_view(MlflowClient(uri), "iqs-digikam", ui.view_state(cfg)) == (exp_id, key[1])
    other = ui.runs_view(MlflowClient(uri), "iqs-digikam", {"selectedColumns": ["tags.`head`"]})
    assert other is not None and other[1] != key[1]
    assert ui.runs_view(MlflowClient(uri), "no-such-experiment", ui.view_state(cfg)) is None


@pytest.mark.slow
def test_ui_without_runs_says_so_and_opens_the_start_page(tmp_path: Path, capsys, migrated_db: Path) -> None:
    assert ui.main(["dry_run=true", "port=5098", f"logger.tracking_uri=sqlite:///{tmp_path}/empty.db"]) == 0
    out = capsys.readouterr().out
    assert "no MLflow store at" in out and "train a run first" in out
    assert "UI: http://127.0.0.1:5098\n" in out
    MlflowClient(f"sqlite:///{shutil.copy(migrated_db, tmp_path / 'other.db')}").create_experiment(
        "someone-else"
    )
    assert ui.main(["dry_run=true", "port=5098", f"logger.tracking_uri=sqlite:///{tmp_path}/other.db"]) == 0
    assert "no experiment 'iqs-digikam'" in capsys.readouterr().out


@pytest.mark.slow
def test_export_is_a_logged_model_of_its_run(tmp_path: Path, migrated_db: Path) -> None:
    uri = f"sqlite:///{shutil.copy(migrated_db, tmp_path)}"
    _, run_id = tracked_run(uri)
    files = {"digikam": tmp_path / "m.digikam.pb", "card": tmp_path / "MODEL_CARD.md"}
    files["digikam"].write_bytes(b"\x0a\x03pb!")
    files["card"].write_text("# card\n", encoding="utf-8")
    client = MlflowClient(uri)
    model = log_export(uri, client.get_run(run_id), files)
    assert (
        model.name == LOGGED_MODEL_NAME
        and model.source_run_id == run_id
        and model.tags["profiles"] == "digikam"
    )
    # an output of the run: what the runs table's Models column lists
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [model.model_id]
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=model.artifact_location, dst_path=str(tmp_path / "model")
        )
    )
    assert {p.name: p.read_bytes() for p in local.iterdir()} == {
        p.name: p.read_bytes() for p in files.values()
    }


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        pytest.skip("no Chromium here: `apt-get install -y chromium chromium-driver` (what .ci/run does)")
    return found


def dump_dom(browser: str, url: str) -> str:
    with tempfile.TemporaryDirectory(prefix="iqs-chromium-") as profile:
        proc = subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=20000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_make_ui_lands_on_the_runs_table_in_a_real_browser(tmp_path: Path, migrated_db: Path) -> None:
    browser = chromium()
    uri = f"sqlite:///{shutil.copy(migrated_db, tmp_path)}"
    exp_id, run_id = tracked_run(uri)
    (tmp_path / "m.digikam.pb").write_bytes(b"\x0a\x03pb!")
    log_export(uri, MlflowClient(uri).get_run(run_id), {"digikam": tmp_path / "m.digikam.pb"})
    port = free_port()
    # the server as `make ui` starts it, job runner included: without it, the page's requests for the GenAI jobs
    # may never settle and headless Chromium's --dump-dom waits past its timeout (seen 2 times in 5)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "iqs",
            "ui",
            f"port={port}",
            "browser=false",
            f"logger.tracking_uri={uri}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # its uvicorn workers end with it
    )
    try:
        url = None
        deadline = time.monotonic() + 400  # a loaded 2-core machine starts the server slowly
        while url is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            assert line, "iqs ui exited before printing its URL"
            if found := re.match(r"UI: (\S+)", line):
                url = found[1]
        assert url == ui.runs_url(f"http://127.0.0.1:{port}", exp_id, url.rsplit("=", 1)[1])
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(1)
        dom = dump_dom(browser, url)
        # the runs table, with the configured columns and the run's values
        columns = set(re.findall(r'col-id="([^"]+)"', dom))
        assert {"metrics.`test/all/srcc`", "tags.`head`", "tags.`data`", "tags.`thresholds`"} <= columns, (
            columns
        )
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
        assert "ordinal-sampler-t4.5_6.5-demo" in text and "0.6543" in text and "4.5_6.5" in text
        assert "Send your first trace" not in text
        assert LOGGED_MODEL_NAME in text  # the Models column lists the export
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=60)
