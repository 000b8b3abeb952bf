"""The shipped model as an MLflow registered model: `models:/<name>@<alias>` instead of a path in someone's notes.

`iqs export ... register=iqs-digikam alias=shipped` stores the exported files (both ONNX profiles, the model
card and the checkpoint they came from) as an MLflow *logged model* (MLflow 3's flavour-free artifact set,
with a unique artifact folder, so a later export can never overwrite a registered version) and registers it
as a new version of the registered model; the alias then points at that version. `iqs predict` and
`iqs export` resolve `models:/<name>@<alias>` and `models:/<name>/<version>` back to those files through
MLflow's own artifact resolution.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODELS_SCHEME = "models:/"
LOGGED_MODEL_NAME = "iqs-export"  # name of the logged model (the registered model's name is the user's)


class RegistryError(Exception):
    """A registered model, version or alias that cannot be used; the message says what exists."""


def is_model_uri(spec: str) -> bool:
    return str(spec).startswith(MODELS_SCHEME)


def log_model_files(
    client: Any,
    files: Mapping[str, Path],
    *,
    experiment_id: str,
    run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Any:
    """`files` ({file name in the model: local path}) as one READY logged model (flat folder); with
    `run_id` it is an output of that run, which the UI's runs table lists in its Models column."""
    import shutil
    import tempfile

    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    str_tags = {str(k): str(v) for k, v in (tags or {}).items() if v is not None}
    logged = client.create_logged_model(
        experiment_id=experiment_id, name=LOGGED_MODEL_NAME, source_run_id=run_id, tags=str_tags
    )
    with tempfile.TemporaryDirectory(prefix="iqs-model-") as tmp:
        for arcname, path in files.items():  # one flat folder: the model holds exactly these files
            shutil.copy2(path, Path(tmp) / arcname)
        client.log_model_artifacts(logged.model_id, tmp)
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    if run_id is not None:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return client.get_logged_model(logged.model_id)


def log_export(tracking_uri: str, run: Any, files: Mapping[str, Path]) -> Any:
    """The files `iqs export` wrote for `run` (an MLflow Run) as a logged model of that run."""
    from mlflow import MlflowClient

    return log_model_files(
        MlflowClient(tracking_uri),
        {p.name: p for p in files.values()},
        experiment_id=run.info.experiment_id,
        run_id=run.info.run_id,
        tags={"profiles": ",".join(k for k in files if k != "card")},
    )


def register_files(
    client: Any,
    name: str,
    files: Mapping[str, Path],
    *,
    experiment_id: str,
    run_id: str | None = None,
    alias: str | None = None,
    description: str = "",
    tags: Mapping[str, Any] | None = None,
) -> Any:
    """Log `files` ({file name in the version: local path}) as one logged model and register it as a new
    version of `name`; returns the ModelVersion."""
    from mlflow.exceptions import MlflowException

    str_tags = {str(k): str(v) for k, v in (tags or {}).items() if v is not None}
    logged = log_model_files(client, files, experiment_id=experiment_id, run_id=run_id, tags=str_tags)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="iqs-digikam quality model versions (files for digiKam and `iqs predict`)"
        )
    version = client.create_model_version(
        name,
        source=logged.artifact_location,
        run_id=run_id,
        tags=str_tags,
        description=description,
        # no model_id=: MLflow would look the logged model up in the *global* tracking store, not `client`'s
    )
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return client.get_model_version(name, version.version)


def _resolve_version(client: Any, uri: str) -> Any:
    """The ModelVersion of `models:/<name>@<alias>` or `models:/<name>/<version>`, with helpful errors."""
    from mlflow.exceptions import MlflowException

    ref = uri[len(MODELS_SCHEME) :].strip("/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        by = "alias"
    elif "/" in ref:
        name, alias = ref.split("/", 1)
        by = "version"
    else:
        raise RegistryError(
            f"{uri}: name a version or an alias: models:/<name>@<alias> or models:/<name>/<version>"
        )
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models())
        raise RegistryError(
            f"{uri}: no registered model '{name}' in {client.tracking_uri} (registered: "
            f"{', '.join(known) or 'none'}); register one with `iqs export ... register={name}`"
        ) from None
    try:
        if by == "alias":
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, alias)
    except MlflowException:
        aliases = ", ".join(f"{a}->v{v}" for a, v in sorted((model.aliases or {}).items())) or "none"
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise RegistryError(
            f"{uri}: model '{name}' has no {by} '{alias}' (aliases: {aliases}; versions: "
            f"{', '.join(map(str, versions)) or 'none'})"
        ) from None


def download_model(uri: str, tracking_uri: str, dst: Path) -> tuple[Path, Any]:
    """(local folder with the version's files, the ModelVersion) for a `models:/` URI."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    version = _resolve_version(client, uri)
    dst.mkdir(parents=True, exist_ok=True)
    # MLflow's own resolution of a version to its files; `models:/` in download_artifacts would consult the
    # *global* registry URI instead of `tracking_uri`
    source = client.get_model_version_download_uri(version.name, version.version)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=source, dst_path=str(dst), tracking_uri=tracking_uri
    )
    return Path(local), version


def find_file(folder: Path, suffix: str, uri: str) -> Path:
    """The one file ending in `suffix` in a downloaded version."""
    found = sorted(p for p in folder.rglob(f"*{suffix}") if p.is_file())
    if len(found) != 1:
        names = sorted(p.name for p in folder.rglob("*") if p.is_file())
        raise RegistryError(
            f"{uri}: expected one '*{suffix}' file in the version, found {names or 'nothing'}"
        )
    return found[0]
