"""The `digikam` profile: the TensorFlow frozen graph digiKam loads, written without TensorFlow, checked in the
OpenCV releases digiKam links.

    export_pb(model, meta, "exports/run/iqs-1234abcd.digikam.pb")

Every digiKam from 8.0 to 9.2 opens `<models folder>/weights_inceptionv3_299.pb` with
`cv::dnn::readNetFromTensorflow` and nothing else (../shared/digikam.md); `iqs digikam install` puts the file
there under that name. Pipeline: the `contract` graph traced to ONNX (iqs.deploy.export.onnx_export, with its
export-only rewrites) -> iqs.deploy.export.tf_graph writes the GraphDef -> the file is kept only when
`readNetFromTensorflow` in each release of `verify_releases` (cached venvs of iqs.deploy.compat.opencv_matrix, one
net reused for every input, as digiKam does) agrees with PyTorch. The project's own OpenCV is never asked:
it may be a release without the TF importer (OpenCV 5.1 removed it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from iqs.core.export_profiles import DIGIKAM, ONNX, PROFILES, Profile
from iqs.core.preprocess import DIGIKAM_SIZE
from iqs.deploy.export.onnx_export import ExportError, export_onnx
from iqs.deploy.export.onnx_ops import release_name
from iqs.deploy.export.onnx_wrappers import wrap
from iqs.deploy.export.tf_graph import GraphError, graph_ops, onnx_to_graphdef

# The releases an export is checked in by default (conf/export.yaml `verify_opencv`): the profile's record
VERIFY_RELEASES = DIGIKAM.opencv_releases


def _onnx_twin(graph: str) -> Profile:
    """The ONNX profile of the same graph: the GraphDef is written from its traced ONNX."""
    return next(p for p in PROFILES.values() if p.graph == graph and p.format is ONNX)


def example_inputs(n: int) -> np.ndarray:
    """(n, 3, 299, 299) float32 in [-1, 1], fixed seed: the inputs every .pb is verified on."""
    x = torch.rand(n, 3, DIGIKAM_SIZE, DIGIKAM_SIZE, generator=torch.Generator().manual_seed(0))
    return (x * 2 - 1).numpy()


def write_pb(
    model: nn.Module, meta: Mapping[str, Any], path: Path, opset: int = 17, profile: Profile = DIGIKAM
) -> dict[str, int]:
    """Write the frozen graph of `model` to `path`; returns its TF op counts."""
    twin = _onnx_twin(profile.graph)
    with tempfile.TemporaryDirectory(prefix="iqs-pb-") as tmp:
        onnx_path = export_onnx(model, meta, Path(tmp) / twin.suffix, twin.name, opset)
        try:
            graph = onnx_to_graphdef(onnx.load(str(onnx_path)))
        except GraphError as err:
            raise ExportError(f"{path.name}: {err}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(graph.SerializeToString())
    return graph_ops(graph)


def verify_pb(
    model: nn.Module,
    meta: Mapping[str, Any],
    path: Path,
    releases: Sequence[str] = VERIFY_RELEASES,
    atol: float = 1e-4,
    profile: Profile = DIGIKAM,
) -> dict[str, float]:
    """readNetFromTensorflow in each release against PyTorch on fixed inputs; {release: max |diff|}."""
    from iqs.deploy.compat.opencv_matrix import MatrixError, run_on_blobs

    x = example_inputs(3)
    with torch.no_grad():
        ref = wrap(model, dict(meta), profile.graph)(torch.from_numpy(x)).numpy()
    try:
        runs = run_on_blobs(path, x, releases)
    except MatrixError as err:
        raise ExportError(f"{path}: cannot check it in OpenCV: {err}") from None
    report: dict[str, float] = {}
    for release, run in runs.items():
        where = f"{path}: OpenCV {release_name(release)}'s readNetFromTensorflow"
        if not run.loads:
            raise ExportError(f"{where} cannot load it: {run.error}")
        if any(p is None for p in run.probs):
            raise ExportError(f"{where} cannot run it: {next(e for e in run.image_errors if e)}")
        worst = float(np.abs(np.array(run.probs) - ref).max())
        if worst > atol:
            raise ExportError(f"{where} differs from PyTorch by {worst:.2e} > {atol:.0e}")
        report[release_name(release)] = worst
    return report


def export_pb(
    model: nn.Module,
    meta: Mapping[str, Any],
    path: str | Path,
    opset: int = 17,
    verify: bool = True,
    releases: Sequence[str] = VERIFY_RELEASES,
    profile: Profile = DIGIKAM,
) -> Path:
    """Write the `digikam` frozen graph to `path`, kept only once verified in `releases`."""
    path = Path(path)
    scratch = path.with_name(f".{path.stem}.tmp{path.suffix}")  # the loader goes by the suffix
    try:
        write_pb(model, meta, scratch, opset, profile)
        if verify:
            verify_pb(model, meta, scratch, releases, profile=profile)
        scratch.replace(path)
    finally:
        scratch.unlink(missing_ok=True)
    return path


def write_profile(
    model: nn.Module,
    meta: Mapping[str, Any],
    path: Path,
    profile: Profile,
    opset: int,
    verify: bool,
    opencv_releases: tuple[str, ...] = VERIFY_RELEASES,
) -> Path:
    """The TensorFlow GraphDef format's writer (iqs.core.export_profiles)."""
    return export_pb(model, meta, path, opset, verify, opencv_releases, profile)
