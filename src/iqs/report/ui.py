"""`iqs ui [port=5000] [logger.tracking_uri=...]`: the MLflow UI on the store the other commands use, opened
on the experiment's runs table.

The store comes from `iqs.tracking.store.tracking_uri_for`, so `make ui` honours `MLFLOW_TRACKING_URI` and
`logger.tracking_uri=...` exactly as `iqs train`, `export`, `predict` and `compare` do. A remote tracking
server already serves its own UI: the command then prints the runs table's address there instead of
starting another.

Where the UI lands. MLflow 3.18 opens an experiment on its GenAI overview, whatever its kind tag says; the
route `#/experiments/<id>/runs` is the runs table (the UI's `experimentPageTabbed` route, tab `runs`). Its
columns are UI state, kept in the browser, except for a *shared view*: the experiment tag
`mlflow.sharedViewState.<key>` holds the view as JSON and `?viewStateShareKey=<key>` applies it (what the
UI's own "Share" button writes). `runs_view` writes that tag from conf/ui.yaml's `columns` and
`order_by`, so every browser opens with test SRCC on `all`, the head, the data and the thresholds.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from iqs.tracking.config_view import cfg_get
from iqs.tracking.experiment import DEFAULT_EXPERIMENT, REMOTE_SCHEMES
from iqs.tracking.store import sqlite_path, tracking_uri_for

# mlflow/server/js: the experiment tag prefix of a shared view and the URL parameter that names it
SHARED_VIEW_TAG = "mlflow.sharedViewState."
SHARE_KEY_PARAM = "viewStateShareKey"
SERVER_START_TIMEOUT_S = 120


def ui_command(cfg) -> list[str]:
    """The `mlflow ui` command line for `cfg`'s store (artifacts of new experiments under mlruns/artifacts)."""
    uri = tracking_uri_for(cfg)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    # the root for experiments created from the UI; ours get theirs when `iqs train` creates them
    root = cfg_get(cfg, "logger.artifact_location")
    if root:
        root = str(root) if urlparse(str(root)).scheme else Path(str(root)).expanduser().resolve().as_uri()
        cmd += ["--default-artifact-root", root]
    cmd += ["--host", str(cfg_get(cfg, "host", "127.0.0.1")), "--port", str(cfg_get(cfg, "port", 5000))]
    workers = cfg_get(cfg, "workers")
    return cmd + (["--workers", str(workers)] if workers else [])


def view_state(cfg: Any) -> dict[str, Any]:
    """The runs table's view: conf/ui.yaml's columns (MLflow's column keys, e.g. metrics.`test/all/srcc`)
    and sort order."""
    order_by = cfg_get(cfg, "order_by")
    state: dict[str, Any] = {"selectedColumns": [str(c) for c in cfg_get(cfg, "columns", [])]}
    if order_by:
        state["orderByKey"] = str(order_by)
        state["orderByAsc"] = bool(cfg_get(cfg, "order_ascending", False))
    return state


def runs_view(client: Any, experiment_name: str, state: dict[str, Any]) -> tuple[str, str] | None:
    """(experiment id, share key) of `experiment_name` with `state` stored as its shared view; None when
    the store has no such experiment yet. The key is the view's hash: one tag per distinct view."""
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None:
        return None
    value = json.dumps(state, sort_keys=True)
    key = "iqs-" + hashlib.sha256(value.encode()).hexdigest()[:16]
    if exp.tags.get(SHARED_VIEW_TAG + key) != value:
        client.set_experiment_tag(exp.experiment_id, SHARED_VIEW_TAG + key, value)
    return exp.experiment_id, key


def runs_url(base: str, experiment_id: str, key: str | None = None) -> str:
    """The runs table of experiment `experiment_id` on the UI at `base` (with the shared view `key`)."""
    url = f"{base.rstrip('/')}/#/experiments/{quote(experiment_id)}/runs"
    return url + (f"?{SHARE_KEY_PARAM}={quote(key)}" if key else "")


def landing_url(cfg: Any, uri: str, base: str) -> tuple[str, str | None]:
    """(URL to open, a note when there is no experiment to land on yet)."""
    from mlflow import MlflowClient

    name = str(cfg_get(cfg, "logger.experiment_name", DEFAULT_EXPERIMENT))
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return base, f"no MLflow store at {uri} yet (train a run first); starting the UI on an empty one"
    found = runs_view(MlflowClient(uri), name, view_state(cfg))
    if found is None:
        return base, f"no experiment '{name}' in {uri} yet (train a run first)"
    return runs_url(base, *found), None


def can_open_browser() -> bool:
    """A graphical browser can show the page: macOS, Windows, or a display on Linux. A text browser that
    `webbrowser` would otherwise pick (lynx, w3m) would take over the terminal the server logs to."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def wait_for_server(url: str, proc: subprocess.Popen, timeout_s: float = SERVER_START_TIMEOUT_S) -> bool:
    """True once the UI answers `url`; False when the server exited or `timeout_s` passed."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    from iqs.core.config import compose

    cfg = compose("ui", list(argv or []))
    uri = tracking_uri_for(cfg)
    if urlparse(uri).scheme in REMOTE_SCHEMES:
        url, note = landing_url(cfg, uri, uri)
        print(
            f"iqs ui: the store is the tracking server {uri}; its runs table: {url}"
            + (f" ({note})" if note else "")
        )
        return 0
    base = f"http://{cfg.host}:{cfg.port}"
    url, note = landing_url(cfg, uri, base)
    if note:
        print(f"iqs ui: {note}")
    cmd = ui_command(cfg)
    print(f"MLflow store: {uri}\nUI: {url}\n  ({' '.join(cmd)})", flush=True)
    if cfg.dry_run:
        return 0
    browser = cfg.browser if cfg.browser is not None else can_open_browser()
    if not browser:
        os.execv(cmd[0], cmd)  # replaces this process: Ctrl-C and signals go straight to the server
    # the browser opens once the server answers, so this process stays as the server's parent
    proc = subprocess.Popen(cmd)
    try:
        if wait_for_server(base, proc):
            import webbrowser

            webbrowser.open(url)
        return proc.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to both: let the server finish its shutdown
        return proc.wait()
