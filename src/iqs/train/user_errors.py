"""Configuration and data errors, told to people in one line; the traceback goes to the log file.

A wrong override or a broken annotation file is the user's to fix, and a traceback only hides the message.
`report` prints `iqs train: error: <message>` on stderr and writes the full traceback to the job's log
file (the file handlers of the root logger, i.e. Hydra's `<output folder>/<job>.log`); the MLflow run,
when one was open, already holds it as `traceback.txt` (iqs.tracking.mlflow_run). Any other exception
is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys

from iqs.checkpoints import CheckpointError
from iqs.data.errors import DataError
from iqs.data.mixture import ConfigError
from iqs.rebalance.base import RebalanceConfigError

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, RebalanceConfigError, CheckpointError)
# the messages reported by this process's jobs (a sweep runs on after one): `main` exits 1 when any
reported: list[str] = []

log = logging.getLogger("iqs.train")


def report(exc: BaseException) -> None:
    """One line on stderr; the traceback into every log file the root logger writes."""
    message = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
    reported.append(message)
    print(f"iqs train: error: {message}", file=sys.stderr)
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, message, None, (type(exc), exc, exc.__traceback__)
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
