"""One ONNX profile of a model -> an ONNX file carrying `iqs_meta`, checked against onnxruntime.

`iqs.deploy.export.exporter` drives it for every profile of an export (iqs.core.export_profiles); the `digikam` .pb is
written from the `contract_onnx` graph by iqs.deploy.export.tf_export.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iqs.core.export_profiles import Profile
from iqs.core.export_profiles import profile as profile_named
from iqs.core.preprocess import DIGIKAM_SIZE
from iqs.deploy.export.onnx_ops import OPENCV_RELEASES, problems, release_name
from iqs.deploy.export.onnx_wrappers import graph as graph_named
from iqs.deploy.export.onnx_wrappers import wrap
from iqs.deploy.export.rewrites import export_copy, rewrite_graph
from iqs.models.checkpoints import META_KEY, has_dist


class ExportError(Exception):
    pass


def export_onnx(
    model: nn.Module, meta: Mapping[str, Any], path: str | Path, profile: str, opset: int = 17
) -> Path:
    """Trace `model` as the ONNX `profile` (contract_onnx or full) to `path` (legacy TorchScript exporter) and
    embed `iqs_meta`."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph_spec = graph_named(profile_named(profile).graph)
    meta = {**meta, "onnx_opset": int(opset), "export_profile": profile}
    names = graph_spec.outputs(has_dist(meta))
    # A random [-1, 1] example: its shape fixes the static pads, its values check the rewritten copy.
    dummy = torch.rand(1, 3, DIGIKAM_SIZE, DIGIKAM_SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    graph = export_copy(wrap(model, dict(meta), graph_spec.name), dummy)
    dynamic = None
    if graph_spec.batch is None:
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
    # The tracer leaves the batch dim of some outputs symbolic; digiKam's contract is a fixed 1x3.
    for value in proto.graph.output:
        if value.name not in graph_spec.fixed:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, graph_spec.fixed[value.name], strict=True):
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
    """onnxruntime against PyTorch on a random [-1, 1] input. OpenCV is not asked here: the file digiKam
    loads is the .pb, checked in the OpenCV releases digiKam links (tf_export.verify_pb)."""
    import onnxruntime as ort

    graph_spec = graph_named(profile_named(profile).graph)
    x = torch.rand(
        graph_spec.batch or 2,  # a graph of any batch size is checked on two images
        3,
        DIGIKAM_SIZE,
        DIGIKAM_SIZE,
        generator=torch.Generator().manual_seed(0),
    )
    x = x * 2 - 1
    graph = wrap(model, dict(meta), graph_spec.name)
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
    worst = max(report.values())
    if worst > atol:
        raise ExportError(
            f"{path}: exported graph differs from PyTorch by {worst:.2e} > {atol:.0e} "
            f"(relative to the output's scale when above 1: {report})"
        )
    return report


def write_profile(
    model: nn.Module,
    meta: Mapping[str, Any],
    path: Path,
    profile: Profile,
    opset: int,
    verify: bool,
    opencv_releases: tuple[str, ...] = (),
) -> Path:
    """The ONNX format's writer (iqs.core.export_profiles): trace, then check with onnxruntime. OpenCV is
    not asked (`opencv_releases` is for the formats digiKam loads)."""
    export_onnx(model, meta, path, profile.name, opset)
    if verify:
        verify_export(model, meta, path, profile.name)
    return path
