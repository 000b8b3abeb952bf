"""`iqs export`: a run (MLflow run id) or a checkpoint -> ONNX files in digiKam's contract + a model card.

    iqs export run_id=<id>                      # best checkpoint of a tracked run; files logged back to it
    iqs export checkpoint=path/to/best.ckpt     # a Lightning checkpoint carrying `iqs_meta`
    iqs export checkpoint=... profiles=[digikam] out_dir=exports/mine opset=17

Writes `<out_dir>/<name>.digikam.onnx`, `<name>.full.onnx` and `MODEL_CARD.md`; see onnx_wrappers for the
two profiles. Every export is checked before it is kept: onnxruntime must match PyTorch, and the digikam
profile must load in OpenCV's DNN module and match too.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from iqs.deploy.export_rewrites import export_copy, rewrite_graph
from iqs.deploy.model_card import render_model_card
from iqs.deploy.onnx_ops import OPENCV_RELEASES, problems, release_name
from iqs.deploy.onnx_wrappers import TF_PROFILE, has_dist, output_names, wrap
from iqs.deploy.preprocess import DIGIKAM_SIZE

META_KEY = "iqs_meta"


class ExportError(Exception):
    pass


# ---------------------------------------------------------------- checkpoints


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig) or OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, iqs_meta) of a Lightning checkpoint; a checkpoint without `iqs_meta` is refused."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint not found: {path}")
    # Lightning checkpoints pickle hyper-parameters (OmegaConf objects), which weights_only refuses;
    # checkpoints are the project's own training outputs.
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    meta = ckpt.get(META_KEY) or (ckpt.get("hyper_parameters") or {}).get(META_KEY)
    if not meta:
        raise ExportError(f"{path}: no '{META_KEY}' record; export needs the metadata saved by `iqs train`")
    if "state_dict" not in ckpt:
        raise ExportError(f"{path}: no 'state_dict' in the checkpoint")
    return ckpt["state_dict"], dict(_plain(meta))


def _strip_prefix(state: Mapping[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Lightning prefixes keys with the attribute holding the model (`model.`); find and drop it."""
    if expected <= set(state):
        return dict(state)
    some = next(iter(expected))
    for key in state:
        if key.endswith(some):
            prefix = key[: len(key) - len(some)]
            stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if expected <= set(stripped):
                return stripped
    missing = sorted(expected - set(state))[:5]
    raise ExportError(
        f"checkpoint state_dict does not match the model built from iqs_meta; missing e.g. {missing}"
    )


def build_model(meta: Mapping[str, Any]) -> nn.Module:
    """The model described by `meta`, with untrained weights (the checkpoint fills them in)."""
    from iqs.models import build_quality_model

    # A record rebuilds without loading the backbone's weight source: the checkpoint carries every weight.
    return build_quality_model(dict(meta))


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    state, meta = read_checkpoint(path)
    model = build_model(meta)
    expected = set(model.state_dict())
    model.load_state_dict(_strip_prefix(state, expected), strict=True)
    return model.eval(), meta


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


def tracking_uri(cfg: DictConfig) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    logger = cfg.get("logger") or {}
    if logger.get("tracking_uri"):
        return str(logger.tracking_uri)
    return f"sqlite:///{Path(cfg.paths.mlruns_dir).resolve()}/mlflow.db"


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
    cache_dir: Path | None = None,
) -> dict[str, Path]:
    """Write every profile and the model card; returns {profile: path, 'card': path}."""
    files: dict[str, Path] = {}
    for profile in profiles:
        if profile == TF_PROFILE:  # a .pb for digiKam 8.0-8.4, converted in the `tf` extra's own venv
            from iqs.deploy.tf_export import export_tf

            path = out_dir / f"{name}.{profile}.pb"
            files[profile] = export_tf(model, meta, path, opset, cache_dir, verify)
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
    profiles = [str(p) for p in cfg.profiles]
    if bool(cfg.run_id) == bool(cfg.checkpoint):
        raise ExportError("give exactly one of run_id=<MLflow run id> or checkpoint=<path to .ckpt>")
    if cfg.checkpoint:
        ckpt = Path(cfg.checkpoint)
        out_dir = Path(cfg.out_dir or Path("exports") / ckpt.stem)
        model, meta = load_checkpoint(ckpt)
        return export_model(
            model,
            meta,
            out_dir,
            ckpt.stem,
            profiles,
            int(cfg.opset),
            str(ckpt),
            verify=cfg.verify,
            cache_dir=Path(cfg.paths.cache_dir),
        )

    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    run = client.get_run(str(cfg.run_id))
    artifact = find_checkpoint_artifact(client, run.info.run_id, cfg.checkpoint_artifact)
    out_dir = Path(cfg.out_dir or Path("exports") / run.info.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path=artifact, dst_path=tmp
        )
        model, meta = load_checkpoint(local)
    files = export_model(
        model,
        meta,
        out_dir,
        f"iqs-{run.info.run_id[:8]}",
        profiles,
        int(cfg.opset),
        f"mlflow run {run.info.run_id} ({artifact})",
        run.data.metrics,
        run.data.params,
        verify=cfg.verify,
        cache_dir=Path(cfg.paths.cache_dir),
    )
    if cfg.log_to_run:
        for path in files.values():
            client.log_artifact(run.info.run_id, str(path), artifact_path=str(cfg.artifact_path))
    return files


def main(argv: list[str] | None = None) -> int:
    from iqs.config import compose

    cfg = compose("export", list(argv or []))
    try:
        files = export_from_cfg(cfg)
    except ExportError as err:
        print(f"iqs export: {err}")
        return 2
    for kind, path in files.items():
        print(f"{kind:>8}: {path}")
    return 0
