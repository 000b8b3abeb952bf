"""Where a run's experiment lives: the MLflow client of the store, the experiment's artifact location,
and the experiment itself (created when absent).

Store. `iqs.tracking.store.tracking_uri_for` decides (explicit `logger.tracking_uri=...` >
$MLFLOW_TRACKING_URI > `sqlite:///<mlruns_dir>/mlflow.db`); every command uses that one resolver, which
also bounds MLflow's HTTP retries (`logger.http_*`). For a tracking server `make_client` queues metrics
so that training never waits for it (iqs.tracking.outage; docs/running-at-scale/tracking-server.md).

Artifacts. Experiments are created with an explicit artifact location,
`<logger.artifact_location>/<experiment name>`, so run files land under `mlruns/artifacts/` and never in
the cwd. For a remote tracking server a plain local path is ignored and the server's default is used
(a URI with a scheme, e.g. `s3://` or `mlflow-artifacts:/`, is passed through).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from iqs.tracking.config_view import cfg_get, safe_name
from iqs.tracking.store import moved_store_warning, store_init_lock, tracking_uri_for

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "iqs-digikam"
REMOTE_SCHEMES = ("http", "https", "databricks")
# MLflow 3 opens an experiment without this tag in its GenAI view (traces); this value opens the
# training-runs table ("Machine learning" in the UI's kind selector; mlflow/server/js ExperimentKind).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def artifact_location_for(cfg: Any, tracking_uri: str, experiment_name: str) -> str | None:
    """Artifact location for a new experiment: `<root>/<experiment>` as a URI, or None for the server's choice."""
    remote = urlparse(tracking_uri).scheme in REMOTE_SCHEMES
    root = cfg_get(cfg, "logger.artifact_location")
    if root is None:
        if remote:
            return None
        # never MLflow's own default, which is relative to the cwd
        root = f"{cfg_get(cfg, 'paths.mlruns_dir', 'mlruns')}/artifacts"
    root = str(root)
    has_scheme = bool(urlparse(root).scheme) and not re.match(r"^[A-Za-z]:[\\/]", root)
    if remote and not has_scheme:
        return None  # a client-side path means nothing to a remote server
    if has_scheme:
        return root.rstrip("/") + "/" + safe_name(experiment_name)
    path = Path(root).expanduser().resolve() / safe_name(experiment_name)
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def make_client(cfg: Any, tracking_uri: str) -> Any:
    """The run's `MlflowClient`; for a tracking server (http/https) metrics are buffered through outages
    (iqs.tracking.outage). Its HTTP retries are bounded by `logger.http_*`, which `tracking_uri_for` (how
    `tracking_uri` is resolved) exports (iqs.tracking.http_settings)."""
    from mlflow import MlflowClient

    from iqs.tracking.outage import BufferedClient

    if urlparse(tracking_uri).scheme not in ("http", "https"):
        return MlflowClient(tracking_uri=tracking_uri)
    return BufferedClient(
        tracking_uri,
        retry_interval_s=float(cfg_get(cfg, "logger.outage_retry_s", 15)),
        grace_s=float(cfg_get(cfg, "logger.outage_grace_s", 120)),
        max_pending=int(cfg_get(cfg, "logger.outage_max_buffered", 200_000)),
    )


def ensure_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """Id of the active experiment `name`, created (with the artifact location) when absent.

    An existing experiment of a local store whose files lie outside the store (a copied `mlruns/`) is
    reported: iqs.tracking.store.moved_store_warning says why and how to fix it.

    The experiment is marked as model training (EXPERIMENT_KIND_TAG) unless someone set its kind already.
    """
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise MlflowException(
                f"MLflow experiment '{name}' is deleted (it sits in the trash of {client.tracking_uri}); "
                f"restore it with `mlflow experiments restore --experiment-id {exp.experiment_id}` "
                "or choose another logger.experiment_name"
            )
        if EXPERIMENT_KIND_TAG not in exp.tags:  # stores made before the tag was set
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        moved = moved_store_warning(client.tracking_uri, name, exp.artifact_location, artifact_location)
        if moved:
            log.warning(moved)
        return exp.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    except MlflowException:
        # another job of the same sweep created it between our lookup and our create
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# (tracking uri, experiment name) -> experiment id, for this process: `iqs train` looks the experiment up
# before the run (iqs.train.resume.prepare) and again when it opens the run, and the jobs of a sweep in one
# process share it; ensure_experiment (and its moved-store warning) then runs once per store and experiment
_EXPERIMENT_IDS: dict[tuple[str, str], str] = {}


def experiment_of(cfg: Any) -> tuple[Any, str, str]:
    """(MlflowClient of the run's store, experiment id, experiment name); the experiment is created if absent.
    Each call gets its own client (a tracking server's metric queue belongs to one run)."""
    uri = tracking_uri_for(cfg)
    experiment = str(cfg_get(cfg, "logger.experiment_name", DEFAULT_EXPERIMENT))
    known = _EXPERIMENT_IDS.get((uri, experiment))
    if known is not None:
        return make_client(cfg, uri), known, experiment
    with store_init_lock(uri):  # parallel sweep jobs: one at a time creates the tables of a new store
        client = make_client(cfg, uri)
        experiment_id = ensure_experiment(client, experiment, artifact_location_for(cfg, uri, experiment))
    _EXPERIMENT_IDS[(uri, experiment)] = experiment_id
    return client, experiment_id, experiment
