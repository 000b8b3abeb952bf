"""`iqs export`: a run (MLflow run id) or a checkpoint -> the file digiKam loads, `iqs predict`'s, a model card.

    iqs export run_id=<id>                      # best checkpoint of a tracked run; files logged back to it
    iqs export checkpoint=path/to/best.ckpt     # a Lightning checkpoint carrying `iqs_meta`
    iqs export checkpoint=... profiles=[digikam] out_dir=exports/mine opset=17
    iqs export run_id=<id> register=iqs-digikam alias=shipped   # also a version in the MLflow Model Registry
    iqs export checkpoint=models:/iqs-digikam@shipped        # re-export a registered version's checkpoint

Writes `<out_dir>/<name>.digikam.pb` (the TensorFlow frozen graph every digiKam 8.0-9.2 loads, installed as
`weights_inceptionv3_299.pb` by `iqs digikam install`), `<name>.full.onnx` (`iqs predict`) and
`MODEL_CARD.md`; `profiles=[...,contract_onnx]` adds digiKam's contract as ONNX for other tools
(iqs.core.export_profiles). Every file is checked before it is kept: the .pb with readNetFromTensorflow in the
OpenCV releases digiKam links (`verify_opencv`), the ONNX files with onnxruntime, each against PyTorch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from iqs.core.export_profiles import ProfileError, file_name, profile
from iqs.deploy.export.onnx_export import ExportError, export_onnx, read_onnx_meta, verify_export
from iqs.models.checkpoints import CheckpointError, load_checkpoint
from iqs.report.model_card import render_model_card as render_card
from iqs.tracking.store import tracking_uri_for

__all__ = [  # ExportError, export_onnx and read_onnx_meta are reached through this module too
    "ExportError",
    "export_from_cfg",
    "export_model",
    "export_onnx",
    "find_checkpoint_artifact",
    "main",
    "read_onnx_meta",
    "register_export",
    "render_model_card",
    "verify_export",
]

# ---------------------------------------------------------------- checkpoints and the card
# Checkpoints are read by iqs.models.checkpoints (weights_only); the card is iqs.report.model_card's.


def render_model_card(
    meta: Mapping[str, Any],
    files: Mapping[str, Path],
    source: str,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
) -> str:
    """The model card of an export: the one card, with the exported files and the run's params."""
    return render_card(
        title=f"{meta.get('backbone', '?')} + {meta.get('head', '?')} head",
        source=f"`{source}`",
        meta=meta,
        metrics=dict(metrics or meta.get("test_metrics") or {}),
        params=params,
        files=files,
    )


# ---------------------------------------------------------------- MLflow


def find_checkpoint_artifact(client: Any, run_id: str, preferred: str | None = None) -> str:
    """The run's best checkpoint: `preferred` if given, else a `.ckpt` named best*, else the only `.ckpt`."""
    if preferred:
        return preferred
    found: list[str] = []
    stack = [""]
    while stack:
        folder = stack.pop()
        for info in client.list_artifacts(run_id, folder or None):
            if info.is_dir:
                stack.append(info.path)
            elif info.path.endswith(".ckpt"):
                found.append(info.path)
    if not found:
        raise ExportError(
            f"run {run_id} has no .ckpt artifact; pass checkpoint=<path> or checkpoint_artifact=..."
        )
    best = [p for p in found if Path(p).name.startswith("best")]
    if len(best) == 1 or len(found) == 1:
        return (best or found)[0]
    raise ExportError(
        f"run {run_id} has several checkpoints {found}; choose one with checkpoint_artifact=..."
    )


def export_model(
    model: nn.Module,
    meta: Mapping[str, Any],
    out_dir: Path,
    name: str,
    profiles: list[str],
    opset: int,
    source: str,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    verify: bool = True,
    verify_opencv: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write every profile and the model card; returns {profile: path, 'card': path}.

    `verify_opencv`: the OpenCV releases (pip versions) a file checked in OpenCV (the .pb) is loaded in;
    None = each profile's own `opencv_releases`."""
    try:
        wanted = [profile(p) for p in profiles]
    except ProfileError as err:
        raise ExportError(str(err)) from None
    files: dict[str, Path] = {}
    for spec in wanted:
        path = out_dir / file_name(name, spec.name)
        files[spec.name] = spec.write(model, meta, path, opset, verify, verify_opencv)
    card = out_dir / "MODEL_CARD.md"
    card.write_text(
        render_model_card({**meta, "onnx_opset": opset}, files, source, metrics, params), encoding="utf-8"
    )
    return {**files, "card": card}


def export_from_cfg(cfg: DictConfig) -> dict[str, Path]:
    """Export what `cfg` names (a checkpoint path, a `models:/` URI or a run id); register it if asked."""
    import contextlib

    profiles = [str(p) for p in cfg.profiles]
    if bool(cfg.run_id) == bool(cfg.checkpoint):
        raise ExportError(
            "give exactly one of run_id=<MLflow run id> or checkpoint=<path to .ckpt | models:/<name>@<alias>>"
        )
    if cfg.get("alias") and not cfg.get("register"):
        raise ExportError(f"alias={cfg.alias} needs register=<registered model name>")
    uri = tracking_uri_for(cfg)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iqs-export-")))
        ckpt, name, source, out_dir, run = _checkpoint_of(cfg, uri, tmp)
        model, meta = load_checkpoint(ckpt)
        metrics, params = (run.data.metrics, run.data.params) if run is not None else (None, None)
        files = export_model(
            model,
            meta,
            out_dir,
            name,
            profiles,
            int(cfg.opset),
            source,
            metrics,
            params,
            verify=cfg.verify,
            verify_opencv=[str(v) for v in cfg.verify_opencv] if cfg.get("verify_opencv") else None,
        )
        if run is not None and cfg.log_to_run:
            from mlflow.tracking import MlflowClient

            from iqs.tracking.model_registry import log_export

            for path in files.values():
                MlflowClient(uri).log_artifact(
                    run.info.run_id, str(path), artifact_path=str(cfg.artifact_path)
                )
            log_export(uri, run, files)  # a logged model of the run: the UI's Models column
        if cfg.get("register"):
            version = register_export(cfg, uri, files, ckpt, name, source, meta, run)
            print(
                f"registered {version.name} version {version.version}"
                + (f" as @{cfg.alias}" if cfg.get("alias") else "")
                + f": models:/{version.name}/{version.version}"
            )
    return files


def _checkpoint_of(cfg: DictConfig, uri: str, tmp: Path) -> tuple[Path, str, str, Path, Any]:
    """The checkpoint `cfg` names (downloaded into `tmp`), its export name, source, out_dir and MLflow run."""
    from iqs.tracking.model_registry import RegistryError, download_model, find_file, is_model_uri

    if cfg.checkpoint and is_model_uri(str(cfg.checkpoint)):
        try:
            folder, version = download_model(str(cfg.checkpoint), uri, tmp / "registered")
            ckpt = find_file(folder, ".ckpt", str(cfg.checkpoint))
        except RegistryError as err:
            raise ExportError(str(err)) from None
        source = f"{cfg.checkpoint} (version {version.version} of {version.name})"
        return (
            ckpt,
            ckpt.stem,
            source,
            Path(cfg.out_dir or Path("exports") / f"{version.name}-v{version.version}"),
            None,
        )
    if cfg.checkpoint:
        ckpt = Path(cfg.checkpoint)
        return ckpt, ckpt.stem, str(ckpt), Path(cfg.out_dir or Path("exports") / ckpt.stem), None
    import mlflow
    from mlflow.tracking import MlflowClient

    run = MlflowClient(uri).get_run(str(cfg.run_id))
    artifact = find_checkpoint_artifact(MlflowClient(uri), run.info.run_id, cfg.checkpoint_artifact)
    ckpt = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path=artifact, dst_path=str(tmp), tracking_uri=uri
        )
    )
    name, source = f"iqs-{run.info.run_id[:8]}", f"mlflow run {run.info.run_id} ({artifact})"
    return ckpt, name, source, Path(cfg.out_dir or Path("exports") / run.info.run_id), run


def register_export(
    cfg: DictConfig,
    uri: str,
    files: Mapping[str, Path],
    ckpt: Path,
    name: str,
    source: str,
    meta: Mapping[str, Any],
    run: Any,
) -> Any:
    """Files + checkpoint -> a new version of the registered model `cfg.register` (alias `cfg.alias`)."""
    from mlflow import MlflowClient

    from iqs.tracking.experiment import artifact_location_for, ensure_experiment
    from iqs.tracking.model_registry import register_files

    client = MlflowClient(uri, registry_uri=uri)
    if run is not None:
        experiment_id = run.info.experiment_id
    else:
        experiment = str(cfg.logger.experiment_name)
        experiment_id = ensure_experiment(client, experiment, artifact_location_for(cfg, uri, experiment))
    # the version keeps the weights under the export's name, so a re-export finds `<name>.ckpt`
    staged = {**{p.name: p for p in files.values()}, f"{name}.ckpt": ckpt}
    return register_files(
        client,
        str(cfg.register),
        staged,
        experiment_id=experiment_id,
        run_id=run.info.run_id if run is not None else None,
        alias=str(cfg.alias) if cfg.get("alias") else None,
        description=f"iqs export of {source}",
        tags={
            "backbone": meta.get("backbone"),
            "head": meta.get("head"),
            "thresholds": meta.get("thresholds"),
            "profiles": ",".join(k for k in files if k != "card"),
            "opset": cfg.opset,
        },
    )


def main(argv: list[str] | None = None) -> int:
    from iqs.core.config import compose

    cfg = compose("export", list(argv or []))
    try:
        files = export_from_cfg(cfg)
    except (ExportError, CheckpointError) as err:
        print(f"iqs export: {err}")
        return 2
    for kind, path in files.items():
        print(f"{kind:>8}: {path}")
    return 0
