"""`iqs ui [port=5000] [logger.tracking_uri=...]`: the MLflow UI on the store the other commands use.

The store comes from `iqs.tracking.store.tracking_uri_for`, so `make ui` honours `MLFLOW_TRACKING_URI` and
`logger.tracking_uri=...` exactly as `iqs train`, `export`, `predict` and `compare` do. A remote tracking
server already serves its own UI: the command then prints its address instead of starting another.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from iqs.tracking.config_view import cfg_get
from iqs.tracking.experiment import REMOTE_SCHEMES
from iqs.tracking.store import sqlite_path, tracking_uri_for


def ui_command(cfg) -> list[str]:
    """The `mlflow ui` command line for `cfg`'s store (artifacts of new experiments under mlruns/artifacts)."""
    uri = tracking_uri_for(cfg)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    # the root for experiments created from the UI; ours get theirs when `iqs train` creates them
    root = cfg_get(cfg, "logger.artifact_location")
    if root:
        root = str(root) if urlparse(str(root)).scheme else Path(str(root)).expanduser().resolve().as_uri()
        cmd += ["--default-artifact-root", root]
    return [*cmd, "--host", str(cfg_get(cfg, "host", "127.0.0.1")), "--port", str(cfg_get(cfg, "port", 5000))]


def main(argv: list[str] | None = None) -> int:
    from iqs.config import compose

    cfg = compose("ui", list(argv or []))
    uri = tracking_uri_for(cfg)
    if urlparse(uri).scheme in REMOTE_SCHEMES:
        print(f"iqs ui: the store is the tracking server {uri}; open it in a browser")
        return 0
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        print(f"iqs ui: no MLflow store at {uri} yet (train a run first); starting the UI on an empty one")
    cmd = ui_command(cfg)
    print(f"MLflow store: {uri}\nUI: http://{cfg.host}:{cfg.port}  ({' '.join(cmd)})", flush=True)
    if cfg.dry_run:
        return 0
    os.execv(cmd[0], cmd)  # replaces this process: Ctrl-C and signals go straight to the server
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
