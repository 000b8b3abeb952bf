"""Configuration and data errors, told to people in one line; the traceback goes to the log file.

A wrong override or a broken annotation file is the user's to fix, and a traceback only hides the message.
`report` prints `iqs train: error: <message>` on stderr and writes the full traceback to the job's log
file (the file handlers of the root logger, i.e. Hydra's `<output folder>/<job>.log`); the MLflow run,
when one was open, already holds it as `traceback.txt` (iqs.tracking.mlflow_run). Any other exception
is a bug and keeps its traceback. A tracking server that cannot be reached (iqs.tracking.store
.unreachable_server) is the user's to start, so it is reported the same way. `HYDRA_FULL_ERROR=1` (Hydra's
own switch for full tracebacks) prints the traceback on stderr as well.

Jobs that a Hydra launcher runs in other processes (joblib's loky workers, submitit jobs) report there,
out of the parent's sight: `collecting` gives them a folder (ERRORS_ENV, inherited through the environment)
where `report` leaves one file per error, so `iqs train -m` still exits 1.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from iqs.core.errors import DataError
from iqs.data.mixture import ConfigError
from iqs.models.checkpoints import CheckpointError
from iqs.rebalance.base import RebalanceConfigError
from iqs.tracking.outage import RunKeptLocally

# RunKeptLocally: the tracking server stayed down; its one line says where the run's files wait and how to
# upload them (iqs.tracking.outage)
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    DataError,
    RebalanceConfigError,
    CheckpointError,
    RunKeptLocally,
)
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
# the messages reported by this process's jobs (a sweep runs on after one): `main` exits 1 when any
reported: list[str] = []
# the folder where jobs in other processes leave their reported messages (set by `collecting`)
ERRORS_ENV = "IQS_USER_ERRORS_DIR"

log = logging.getLogger("iqs.train")


def user_error(exc: BaseException) -> BaseException | None:
    """The error to tell the user in one line (`exc`, or what it means: an unreachable tracking server),
    None for a bug, which keeps its traceback."""
    from iqs.tracking.model_registry import RegistryError
    from iqs.tracking.store import unreachable_server

    if isinstance(exc, (*USER_ERRORS, RegistryError)):
        return exc
    if (missing := not_found(exc)) is not None:
        return missing
    return unreachable_server(exc)


class NotFoundError(LookupError):
    """A run, experiment or model id that the store does not hold (a typo, or another store)."""


def not_found(exc: BaseException) -> NotFoundError | None:
    """MLflow's RESOURCE_DOES_NOT_EXIST (e.g. `iqs export run_id=<typo>`) as a NotFoundError, else None."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException) or exc.error_code != "RESOURCE_DOES_NOT_EXIST":
        return None
    err = NotFoundError(
        f"{exc.message} in this MLflow store (logger.tracking_uri=, else $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlruns/mlflow.db); `iqs compare` and `make ui` list the tracked runs"
    ).with_traceback(exc.__traceback__)
    err.__cause__ = exc
    return err


def full_error() -> bool:
    return os.environ.get(FULL_ERROR_ENV) == "1"


def report(exc: BaseException, command: str = "iqs train") -> None:
    """One line on stderr; the traceback into every log file the root logger writes (and on stderr too
    with HYDRA_FULL_ERROR=1)."""
    message = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
    reported.append(message)
    _leave_marker(message)
    if full_error():
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{command}: error: {message}", file=sys.stderr)
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, message, None, (type(exc), exc, exc.__traceback__)
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _leave_marker(message: str) -> None:
    folder = os.environ.get(ERRORS_ENV)
    if not folder:
        return
    try:
        (Path(folder) / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.txt").write_text(message, encoding="utf-8")
    except OSError as exc:  # the folder is gone or not shared with this node: the log still has the error
        log.warning("could not record the error for the exit status in %s: %s", folder, exc)


@contextmanager
def collecting() -> Iterator[list[str]]:
    """The messages every job reports while the block runs, in this process or in launcher workers that
    inherit the environment (filled in when the block ends).

    The folder is a hidden `.iqs-errors-*` in the working directory, which the nodes of a cluster usually
    share (submitit jobs reach it), else in the temp folder; it is removed afterwards."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=".iqs-errors-", dir=Path.cwd()))
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="iqs-errors-"))
    before = os.environ.get(ERRORS_ENV)
    os.environ[ERRORS_ENV] = str(folder.resolve())
    messages: list[str] = []
    try:
        yield messages
    finally:
        if before is None:
            os.environ.pop(ERRORS_ENV, None)
        else:
            os.environ[ERRORS_ENV] = before
        messages.extend(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt")))
        shutil.rmtree(folder, ignore_errors=True)
