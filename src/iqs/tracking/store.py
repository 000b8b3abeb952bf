"""Which MLflow store a command talks to: the one resolver used by train, export, predict, compare and ui.

Precedence, highest first:
1. an explicit config key, `logger.tracking_uri=...` on the command line (or in a preset);
2. the environment variable `MLFLOW_TRACKING_URI`;
3. `sqlite:///<paths.mlruns_dir>/mlflow.db`, the project's default store.

An explicit override wins because it is the most specific statement of intent (one command), the
variable is a shell-wide default, and the built-in default is the last resort; this is also what
conf/logger/mlflow.yaml encodes (`${oc.env:MLFLOW_TRACKING_URI,sqlite:///...}`), so a composed config and
this function never disagree. A relative SQLite path is made absolute (a Hydra job that changes directory
still finds the store) and its folder is created: MLflow 3 would otherwise fall back to an `mlflow.db`
in whatever the cwd is, so the URI is always passed explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ENV_VAR = "MLFLOW_TRACKING_URI"
SQLITE = "sqlite:///"


def normalise_tracking_uri(uri: str) -> str:
    """Absolute SQLite path (folder created); other URIs unchanged."""
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + ":memory:"):
        path = Path(uri[len(SQLITE) :]).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLITE + path.as_posix()
    return uri


def tracking_uri_for(cfg: Any) -> str:
    """The store of `cfg` (a DictConfig or nested dict with `logger` and `paths`), by the precedence above."""
    from iqs.tracking.mlflow_run import cfg_get  # lazy: mlflow_run imports this module

    uri = cfg_get(cfg, "logger.tracking_uri") or os.environ.get(ENV_VAR)
    if not uri:
        uri = f"{SQLITE}{cfg_get(cfg, 'paths.mlruns_dir', 'mlruns')}/mlflow.db"
    return normalise_tracking_uri(str(uri))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, None for any other store."""
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + ":memory:"):
        return Path(uri[len(SQLITE) :])
    return None
