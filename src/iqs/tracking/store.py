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
import re
import shlex
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

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
    """The store of `cfg` (a DictConfig or nested dict with `logger` and `paths`), by the precedence above.
    MLflow's HTTP retries are bounded by the config's `logger.http_*` (iqs.tracking.http_settings)."""
    from iqs.tracking.config_view import cfg_get
    from iqs.tracking.http_settings import apply_http_settings

    # every command resolves its store here, so this also bounds its HTTP calls to a tracking server
    apply_http_settings(cfg)
    uri = cfg_get(cfg, "logger.tracking_uri") or os.environ.get(ENV_VAR)
    if not uri:
        uri = f"{SQLITE}{cfg_get(cfg, 'paths.mlruns_dir', 'mlruns')}/mlflow.db"
    return normalise_tracking_uri(str(uri))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, None for any other store."""
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + ":memory:"):
        return Path(uri[len(SQLITE) :])
    return None


def store_init_lock(uri: str) -> Any:
    """A file lock next to a SQLite store, held while a process first opens it (nullcontext otherwise).

    MLflow creates and migrates the tables when a process first opens a new database; the jobs of a
    parallel sweep (hydra/launcher=joblib or submitit_local) would otherwise do so at the same moment on a
    fresh store and fail in alembic ("Online migration expected to match one row").
    """
    from contextlib import nullcontext

    from filelock import FileLock

    db = sqlite_path(uri)
    return nullcontext() if db is None else FileLock(str(db) + ".init.lock")


# ---------------------------------------------------------------- unreachable tracking server


class TrackingUnreachableError(ConnectionError):
    """The tracking server of `uri` refused or never answered the first request; the message says what to do."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        where = urlparse(uri)
        port = where.port or (443 if where.scheme == "https" else 80)
        super().__init__(
            f"the MLflow tracking server {uri} is unreachable ({reason}). Start it (`mlflow server --host "
            f"{where.hostname or '127.0.0.1'} --port {port} --backend-store-uri sqlite:///mlruns/mlflow.db`), "
            "or use the local "
            "store sqlite:///mlruns/mlflow.db: drop logger.tracking_uri= and unset MLFLOW_TRACKING_URI"
        )


def unreachable_server(exc: BaseException) -> TrackingUnreachableError | None:
    """`exc` as a TrackingUnreachableError when its chain ends in a failed connection to a tracking server
    (refused, unknown host, timed out: MLflow wraps requests' ConnectionError, which wraps urllib3's), else
    None. MLflow names the failed request ("API request to <server>/api/2.0/... failed"); the server's URI
    is taken from there, else from $MLFLOW_TRACKING_URI."""
    import requests

    seen: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in seen:
        seen.append(node)
        if isinstance(node, TrackingUnreachableError):
            return node
        node = node.__cause__ or node.__context__
    failed = [
        e for e in seen if isinstance(e, requests.exceptions.ConnectionError | requests.exceptions.Timeout)
    ]
    if not failed:
        return None
    uri = ""
    for e in seen:
        if found := re.search(r"API request to (\S+?)/api/\d", str(e)):
            uri = found.group(1)
            break
    uri = uri or os.environ.get(ENV_VAR, "the tracking server")
    root = seen[-1]
    if isinstance(root, ConnectionRefusedError):
        reason = "connection refused: nothing listens there"
    elif isinstance(root, OSError) and "Name or service not known" in str(root):
        reason = "unknown host"
    elif isinstance(failed[0], requests.exceptions.Timeout) or isinstance(root, TimeoutError):
        reason = "no answer within logger.http_timeout_s"
    else:
        reason = f"{type(root).__name__}: {str(root)[:120]}"
    err = TrackingUnreachableError(uri, reason).with_traceback(exc.__traceback__)
    err.__cause__ = exc  # HYDRA_FULL_ERROR=1 and the log file show the whole chain
    return err


# ---------------------------------------------------------------- moved stores


def local_artifact_path(location: str | None) -> Path | None:
    """The folder of a `file:` URI or plain path; None for remote locations (s3://, mlflow-artifacts:/)."""
    if not location:
        return None
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme and not re.match(r"^[A-Za-z]$", parsed.scheme):  # C:\... is a path, not a scheme
        return None
    return Path(location)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def moved_store_warning(
    tracking_uri: str, experiment: str, location: str, expected: str | None
) -> str | None:
    """A message when experiment `experiment` of a local SQLite store keeps its files outside the store.

    MLflow stores each experiment's artifact location as an absolute URI. A `mlruns/` folder that was copied
    or moved (another checkout, machine or disk) still points at the original folder, so new runs would
    write their files there without a word. Inside the store's folder or the configured artifact root
    (`expected` is where a new experiment would go, `<root>/<experiment>`) is fine; None then.
    """
    db = sqlite_path(tracking_uri)
    path = local_artifact_path(location)
    if db is None or path is None:
        return None
    roots = [db.parent]
    if (expected_path := local_artifact_path(expected)) is not None:
        roots.append(expected_path.parent)
    if any(_inside(path, root) for root in roots):
        return None
    default_root = db.parent / "artifacts"
    target = local_artifact_path(expected) or default_root / experiment
    command = f"iqs store relocate {shlex.quote(str(db))}"
    if target.parent.resolve() != default_root.resolve():  # a configured logger.artifact_location
        command += f" --artifact-root {shlex.quote(str(target.parent))}"
    return (
        f"MLflow experiment '{experiment}' in {tracking_uri} keeps its artifacts in {path}, outside this store's "
        f"folder {db.parent}: the store was probably copied or moved from another checkout, and this run's "
        f"files would be written into {path}. To use the copy's own files, run "
        f"`{command}` (points the experiments at {target.parent}/<experiment>), "
        "or start a fresh experiment with logger.experiment_name=<new name>."
    )


# MLflow has no API to change an experiment's artifact location (it is immutable in the REST API and
# MlflowClient), so relocating rewrites the columns that hold absolute artifact URIs in its SQL schema.
URI_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


def relocate(db: str | Path, artifact_root: str | Path | None = None) -> dict[str, tuple[str, str]]:
    """Point every experiment of the SQLite store `db` whose files lie outside its folder at
    `<artifact_root>/<experiment>` (default root: `artifacts/` next to `db`), with its runs, logged models
    and model versions. Files are not moved: a copied `mlruns/` already holds them. Returns
    {experiment: (old location, new location)}."""
    import sqlite3
    from contextlib import closing

    from iqs.tracking.config_view import safe_name

    db = Path(db).expanduser().resolve()
    if not db.is_file():
        raise FileNotFoundError(f"no MLflow SQLite store at {db}")
    root = Path(artifact_root).expanduser().resolve() if artifact_root else db.parent / "artifacts"
    moved: dict[str, tuple[str, str]] = {}
    with closing(sqlite3.connect(db)) as con, con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for name, location in con.execute("SELECT name, artifact_location FROM experiments").fetchall():
            path = local_artifact_path(location)
            if path is None or _inside(path, db.parent) or _inside(path, root):
                continue
            new = (root / safe_name(name)).as_uri()
            old = location.rstrip("/")
            for table, column in URI_COLUMNS:
                if table in tables:
                    con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608 - fixed names
                        f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                        (new, len(old) + 1, old, len(old) + 1, old + "/"),
                    )
            (root / safe_name(name)).mkdir(parents=True, exist_ok=True)
            moved[name] = (location, new)
    return moved


def main(argv: list[str] | None = None) -> int:
    """`iqs store relocate <mlflow.db> [--artifact-root DIR]` (conf/relocate.yaml)."""
    from iqs.core.config import compose

    cfg = compose("relocate", list(argv or []))
    try:
        moved = relocate(str(cfg.db), cfg.artifact_root)
    except FileNotFoundError as exc:
        print(f"iqs store relocate: {exc}", file=sys.stderr)
        return 2
    for name, (old, new) in moved.items():
        print(f"{name}: {old} -> {new}")
    if not moved:
        print(f"every experiment of {cfg.db} already keeps its files inside the store")
    return 0
