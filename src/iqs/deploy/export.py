"""`iqs export`: a run (MLflow run id) or a checkpoint -> ONNX files in digiKam's contract + a model card.

    iqs export run_id=<id>                      # best checkpoint of a tracked run; files logged back to it
    iqs export checkpoint=path/to/best.ckpt     # a Lightning checkpoint carrying `iqs_meta`
    iqs export checkpoint=... profiles=[digikam] out_dir=exports/mine opset=17
    iqs export run_id=<id> register=iqs-digikam alias=shipped   # also a version in the MLflow Model Registry
    iqs export checkpoint=models:/iqs-digikam@shipped        # re-export a registered version's checkpoint

Writes `<out_dir>/<name>.digikam.onnx`, `<name>.full.onnx` and `MODEL_CARD.md`; see onnx_wrappers for the
two profiles. Every export is checked before it is kept: onnxruntime must match PyTorch, and the digikam
profile must load in OpenCV's DNN module and match too.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from iqs.checkpoints import META_KEY, CheckpointError, load_checkpoint
from iqs.deploy.export_rewrites import export_copy, rewrite_graph
from iqs.deploy.onnx_ops import OPENCV_RELEASES, problems, release_name
from iqs.deploy.onnx_wrappers import TF_PROFILE, has_dist, output_names, wrap
from iqs.deploy.preprocess import DIGIKAM_SIZE
from iqs.tracking.model_card import render_model_card as render_card
from iqs.tracking.store import tracking_uri_for


class ExportError(Exception):
    pass


# ---------------------------------------------------------------- checkpoints and the card
# Checkpoints are read by iqs.checkpoints (weights_only); the card is iqs.tracking.model_card's.


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


# ---------------------------------------------------------------- ONNX


def export_onnx(
    model: nn.Module, meta: Mapping[str, Any], path: str | Path, profile: str, opset: int = 17
) -> Path:
    """Trace `model` in `profile` to `path` (legacy TorchScript exporter) and embed `iqs_meta`."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "onnx_opset": int(opset), "export_profile": profile}
    names = output_names(profile, with_dist=has_dist(meta))
    # A random [-1, 1] example: its shape fixes the static pads, its values check the rewritten copy.
    dummy = torch.rand(1, 3, DIGIKAM_SIZE, DIGIKAM_SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    graph = export_copy(wrap(model, dict(meta), profile), dummy)
    dynamic = None
    if profile == "full":
        dynamic = {"input": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with torch.no_grad():
        # dynamo=False: the dynamo exporter needs onnxscript, and OpenCV's importer is tested on this one.
        torch.onnx.export(
            graph,
            (dummy,),
            str(path),
            input_names=["input"],
            output_names=names,
            dynamic_axes=dynamic,
            opset_version=int(opset),
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    if profile == "digikam":
        # The tracer leaves the batch dim of some outputs symbolic; digiKam's contract is a fixed 1x3.
        for value, dims in ((proto.graph.output[0], (1, 3)),):
            for dim, size in zip(value.type.tensor_type.shape.dim, dims, strict=True):
                dim.Clear()
                dim.dim_value = size
    rewrite_graph(proto)
    onnx.checker.check_model(proto, full_check=True)
    _refuse_unportable(proto, meta, path)
    for key, value in ((META_KEY, json.dumps(meta, default=list)), ("iqs_profile", profile)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"iqs quality model, {profile} profile: input RGB 299x299 in [-1,1]; outputs {names}"
    onnx.save(proto, str(path))
    return path


def _refuse_unportable(proto: Any, meta: Mapping[str, Any], path: Path) -> None:
    """Refuse (and delete) a graph that some digiKam OpenCV cannot run, or a backbone marked non-exportable."""
    found = problems(proto)
    marked = meta.get("exportable") is False
    if not found and not marked:
        return
    path.unlink(missing_ok=True)
    what = f"backbone '{meta.get('backbone')}'"
    lines = found or ["(the graph check finds nothing, but the config says it fails in the OpenCV matrix)"]
    reason = f"{what} is marked `exportable: false` in conf/backbone" if marked else f"{path.name} ({what})"
    raise ExportError(
        f"{reason}: operators that digiKam's OpenCV cannot run:\n  - "
        + "\n  - ".join(lines)
        + f"\nTested OpenCV releases: {', '.join(release_name(r) for r in OPENCV_RELEASES)}; "
        "choose an exportable backbone (conf/backbone/*.yaml) for a digiKam model."
    )


def read_onnx_meta(path: str | Path) -> dict[str, Any]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise ExportError(f"{path}: no '{META_KEY}' metadata; export it with `iqs export`")
    meta = json.loads(props[META_KEY])
    meta.setdefault("export_profile", props.get("iqs_profile"))
    return meta


def verify_export(
    model: nn.Module, meta: Mapping[str, Any], path: Path, profile: str, atol: float = 1e-4
) -> dict:
    """onnxruntime (and, for digikam, OpenCV DNN) against PyTorch on a random [-1, 1] input."""
    import onnxruntime as ort

    x = torch.rand(
        2 if profile == "full" else 1,
        3,
        DIGIKAM_SIZE,
        DIGIKAM_SIZE,
        generator=torch.Generator().manual_seed(0),
    )
    x = x * 2 - 1
    graph = wrap(model, dict(meta), profile)
    with torch.no_grad():
        ref = graph(x)
    ref = [t.numpy() for t in (ref if isinstance(ref, tuple) else (ref,))]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})

    # differences relative to each output's scale, at least 1: probabilities keep an absolute tolerance,
    # while the scores of an untrained backbone (weights=none; inception_v3 reaches 1e8) are not held to
    # a float32 resolution they do not have
    def scaled(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).max()) / max(1.0, float(np.abs(b).max()))

    report = {"ort_max_diff": max(scaled(a, b) for a, b in zip(got, ref, strict=True))}
    if profile == "digikam":
        import cv2

        net = cv2.dnn.readNet(str(path))
        net.setInput(x.numpy())
        report["opencv_max_diff"] = scaled(net.forward(), ref[0])
    worst = max(report.values())
    if worst > atol:
        raise ExportError(
            f"{path}: exported graph differs from PyTorch by {worst:.2e} > {atol:.0e} "
            f"(relative to the output's scale when above 1: {report})"
        )
    return report


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
    venv_root: Path | None = None,
) -> dict[str, Path]:
    """Write every profile and the model card; returns {profile: path, 'card': path}."""
    files: dict[str, Path] = {}
    for profile in profiles:
        if profile == TF_PROFILE:  # a .pb for digiKam 8.0-8.4, converted in the `tf` extra's own venv
            from iqs.deploy.tf_export import export_tf

            path = out_dir / f"{name}.{profile}.pb"
            files[profile] = export_tf(model, meta, path, opset, venv_root, verify)
            continue
        path = export_onnx(model, meta, out_dir / f"{name}.{profile}.onnx", profile, opset)
        if verify:
            verify_export(model, meta, path, profile)
        files[profile] = path
    card = out_dir / "MODEL_CARD.md"
    card.write_text(
        render_model_card({**meta, "onnx_opset": opset}, files, source, metrics, params), encoding="utf-8"
    )
    return {**files, "card": card}


def export_from_cfg(cfg: DictConfig) -> dict[str, Path]:
    """Export what `cfg` names (a checkpoint path, a `models:/` URI or a run id); register it if asked."""
    import contextlib

    from iqs.tracking.model_registry import RegistryError, download_model, find_file, is_model_uri

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
        run = None
        if cfg.checkpoint and is_model_uri(str(cfg.checkpoint)):
            try:
                folder, version = download_model(str(cfg.checkpoint), uri, tmp / "registered")
                ckpt = find_file(folder, ".ckpt", str(cfg.checkpoint))
            except RegistryError as err:
                raise ExportError(str(err)) from None
            name, source = ckpt.stem, f"{cfg.checkpoint} (version {version.version} of {version.name})"
            out_dir = Path(cfg.out_dir or Path("exports") / f"{version.name}-v{version.version}")
        elif cfg.checkpoint:
            ckpt = Path(cfg.checkpoint)
            name, source = ckpt.stem, str(ckpt)
            out_dir = Path(cfg.out_dir or Path("exports") / ckpt.stem)
        else:
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
            out_dir = Path(cfg.out_dir or Path("exports") / run.info.run_id)
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
        )
        if run is not None and cfg.log_to_run:
            from mlflow.tracking import MlflowClient

            for path in files.values():
                MlflowClient(uri).log_artifact(
                    run.info.run_id, str(path), artifact_path=str(cfg.artifact_path)
                )
        if cfg.get("register"):
            version = register_export(cfg, uri, files, ckpt, name, source, meta, run)
            print(
                f"registered {version.name} version {version.version}"
                + (f" as @{cfg.alias}" if cfg.get("alias") else "")
                + f": models:/{version.name}/{version.version}"
            )
    return files


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

    from iqs.tracking.mlflow_run import artifact_location_for, ensure_experiment
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
    from iqs.config import compose

    cfg = compose("export", list(argv or []))
    try:
        files = export_from_cfg(cfg)
    except (ExportError, CheckpointError) as err:
        print(f"iqs export: {err}")
        return 2
    for kind, path in files.items():
        print(f"{kind:>8}: {path}")
    return 0
