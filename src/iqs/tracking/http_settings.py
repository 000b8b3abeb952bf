"""Bounded MLflow HTTP calls: MLflow's own retry settings, filled from the `logger` config.

MLflow's defaults (mlflow.environment_variables, 3.x) retry a failed request 7 times with a backoff
factor of 2 and a 120 s timeout per attempt: against a dead tracking server one call gives up after about
4 minutes (urllib3 sleeps 0, 4, 8, ..., capped at 120 s), which is what froze training in issue 12.
MLflow reads these variables at every request (`MLFLOW_HTTP_REQUEST_*.get()` in mlflow.utils.rest_utils),
so setting them in the process environment before the first call bounds every client of this process and
of its children (DDP workers, Hydra jobs). A variable the user exported wins over the config.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
    MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
)

log = logging.getLogger(__name__)
_SET_HERE: dict[str, str] = {}  # variables this module exported (a later config may change them)

# config key under `logger` -> MLflow's variable
SETTINGS = {
    "http_timeout_s": MLFLOW_HTTP_REQUEST_TIMEOUT,
    "http_max_retries": MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    "http_backoff_factor": MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
}


@dataclass(frozen=True)
class HttpSettings:
    timeout_s: int
    max_retries: int
    backoff_factor: int
    backoff_jitter: float

    def worst_case_s(self, *, unresponsive: bool = True) -> float:
        """Longest one MLflow call can take before it raises: every attempt waits `timeout_s` (a server
        that accepts nothing; a refused connection fails at once) plus urllib3's backoff sleeps,
        0, 2f, 4f, ... (+ jitter each) between the attempts (urllib3.util.retry.Retry.get_backoff_time)."""
        attempts = self.max_retries + 1
        sleeps = sum(
            min(120.0, self.backoff_factor * 2 ** (n - 1) + self.backoff_jitter)
            for n in range(2, self.max_retries + 1)
        )
        return (attempts * self.timeout_s if unresponsive else 0.0) + sleeps

    @classmethod
    def current(cls) -> HttpSettings:
        """The values MLflow will use now (environment, else MLflow's defaults)."""
        return cls(
            timeout_s=int(MLFLOW_HTTP_REQUEST_TIMEOUT.get()),
            max_retries=int(MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()),
            backoff_factor=int(MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()),
            backoff_jitter=float(MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get()),
        )


def apply_http_settings(cfg: Any) -> HttpSettings:
    """Export `logger.http_*` as MLflow's variables, except those already set in the environment."""
    from iqs.tracking.config_view import cfg_get

    # urllib3 logs a WARNING per retry of a failed request; the outcome is reported once (the outage
    # buffer's messages, or iqs.tracking.store.unreachable_server's one line), so its retries stay quiet
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    for key, var in SETTINGS.items():
        value = cfg_get(cfg, f"logger.{key}")
        if value is None:
            continue
        current = os.environ.get(var.name)
        if current is not None and _SET_HERE.get(var.name) != current:
            if current != str(value):
                log.debug("%s=%s from the environment wins over logger.%s=%s", var.name, current, key, value)
            continue
        if int(value) < 0 or int(value) != value:
            raise ValueError(
                f"logger.{key} must be a whole number >= 0 (MLflow reads {var.name} as int), got {value}"
            )
        os.environ[var.name] = _SET_HERE[var.name] = str(int(value))
    return HttpSettings.current()
