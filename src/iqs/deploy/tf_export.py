"""The `digikam_tf` profile: the `digikam` graph as a TensorFlow frozen graph, for digiKam 8.0-8.4.

digiKam 8.0-8.4 load only `cv::dnn::readNetFromTensorflow` on a file named `weights_inceptionv3_299.pb`
(rename `<name>.digikam_tf.pb` to that). The contract is the `digikam` profile's: digiKam's NCHW blob
1x3x299x299 RGB in [-1, 1] in, 1x3 probabilities (bad, normal, good) out. The frozen graph's placeholder is
NHWC (1x299x299x3), as in digiKam's stock Keras model: OpenCV's TF importer keeps its blobs NCHW and maps
NHWC layers onto them, so digiKam's `blobFromImage` blob is fed as is (checked by the OpenCV matrix test).

Pipeline: `export_onnx(profile="digikam")` (static pads, ReLU6 and min without Clip/Min) -> onnx-simplifier
-> onnx2tf -> `convert_variables_to_constants_v2` -> two fixes for OpenCV's importer (see tf_worker) -> .pb,
then readNetFromTensorflow in this venv's OpenCV must agree with PyTorch before the file is kept.

Why a venv of its own: onnx2tf pins its whole stack exactly (1.29.24: tensorflow 2.19.0, protobuf 4.25.5,
numpy 1.26.4, onnx 1.19.1), which conflicts with the project's (protobuf 7, numpy 2, onnx 1.23), and
onnx2tf 2.x needs Python 3.12. So the `tf` extra in pyproject.toml is installed, once, into
a cached venv (iqs.deploy.tool_venvs) and tf_worker runs there as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iqs.deploy.export import ExportError, export_onnx
from iqs.deploy.onnx_wrappers import TF_PROFILE, wrap
from iqs.deploy.preprocess import DIGIKAM_SIZE
from iqs.deploy.tool_venvs import VenvError, cached_venv

TF_EXTRA = "tf"
WORKER = Path(__file__).with_name("tf_worker.py")
# TensorFlow operators whose frozen graphs loaded and agreed with PyTorch in OpenCV 4.6, 4.8, 4.10, 4.12 and
# 5.0 (tests/test_tf_export.py; Relu6 and Squeeze in graphs exported before export_rewrites removed them,
# checked the same way by hand; Erf, RealDiv and Sqrt from the demo preset's MLSP pooling, batch-norm and
# GELU head, checked by `make compat`); anything else is refused at export rather than found broken in digiKam.
OPENCV_TF_OPS = frozenset(
    {
        "Placeholder", "Const", "Identity", "ResizeBilinear", "Mul", "AddV2", "Sub", "Transpose", "Pad",
        "Conv2D", "DepthwiseConv2dNative", "Relu", "Relu6", "Mean", "Reshape", "Squeeze", "MatMul", "ConcatV2",
        "Softmax", "Erf", "RealDiv", "Sqrt",
    }
)  # fmt: skip


def tf_requirements() -> list[str]:
    """The `tf` extra's pinned requirements, declared once in pyproject.toml."""
    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    if pyproject.is_file():  # a checkout (editable install)
        with pyproject.open("rb") as f:
            return list(tomllib.load(f)["project"]["optional-dependencies"][TF_EXTRA])
    from importlib.metadata import requires

    marker = f'extra == "{TF_EXTRA}"'
    return [r.split(";")[0].strip() for r in requires("iqs-digikam") or [] if marker in r]


def converter_python(venv_root: str | Path | None = None) -> Path:
    """Python of the cached venv holding the `tf` extra (about 1.5 GB, built on first use; iqs.deploy.tool_venvs)."""
    requirements = tf_requirements()
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:12]
    what = f"the `{TF_EXTRA}` extra for profile {TF_PROFILE}"
    try:
        return cached_venv(f"tf-{key}", requirements, what, root=venv_root, quiet=False)
    except VenvError as err:
        raise ExportError(f"{err}. Retry when online, or drop {TF_PROFILE} from profiles=") from None


def _example_inputs(n: int) -> np.ndarray:
    """(n, 3, 299, 299) float32 in [-1, 1], fixed seed: what the converter sees and what verification runs."""
    x = torch.rand(n, 3, DIGIKAM_SIZE, DIGIKAM_SIZE, generator=torch.Generator().manual_seed(0))
    return (x * 2 - 1).numpy()


def convert_onnx_to_tf(onnx_path: Path, pb_path: Path, venv_root: str | Path | None = None) -> dict[str, Any]:
    """Run tf_worker in the converter venv (network blocked there); returns its report."""
    python = converter_python(venv_root)
    onnx_path, pb_path = Path(onnx_path).resolve(), Path(pb_path).resolve()  # the worker runs in a temp cwd
    pb_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        samples, report = Path(tmp) / "samples.npy", Path(tmp) / "report.json"
        np.save(samples, _example_inputs(2).transpose(0, 2, 3, 1))  # onnx2tf takes NHWC samples
        # no GPU probing, no TF log spam; cwd=tmp because onnx2tf writes scratch files into the cwd
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [str(python), str(WORKER), str(onnx_path), str(pb_path), str(samples), str(report)]
        proc = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise ExportError(f"{onnx_path}: conversion to a TensorFlow frozen graph failed:\n{tail}")
        return json.loads(report.read_text(encoding="utf-8"))


def check_ops(path: Path, ops: Mapping[str, int]) -> None:
    unknown = sorted(set(ops) - OPENCV_TF_OPS)
    if unknown:
        raise ExportError(
            f"{path}: TensorFlow operators {unknown} were never checked with OpenCV 4.6-4.12's TF importer "
            "(digiKam 8.0-8.4); this backbone or head cannot be exported as digikam_tf yet"
        )


def verify_tf(model: nn.Module, meta: Mapping[str, Any], path: Path, atol: float = 1e-4) -> dict[str, float]:
    """readNetFromTensorflow (this venv's OpenCV, digiKam's NCHW blob) against PyTorch, one net for all."""
    import cv2

    x = _example_inputs(2)
    with torch.no_grad():
        ref = wrap(model, dict(meta), "digikam")(torch.from_numpy(x)).numpy()
    net = cv2.dnn.readNetFromTensorflow(str(path))
    got = []
    for blob in x:
        net.setInput(blob[None])
        got.append(net.forward().reshape(-1).copy())
    worst = float(np.abs(np.array(got) - ref).max())
    if worst > atol:
        raise ExportError(f"{path}: OpenCV's TF importer differs from PyTorch by {worst:.2e} > {atol:.0e}")
    return {"opencv_tf_max_abs_diff": worst}


def export_tf(
    model: nn.Module,
    meta: Mapping[str, Any],
    path: str | Path,
    opset: int = 17,
    venv_root: str | Path | None = None,
    verify: bool = True,
) -> Path:
    """Write the digikam_tf frozen graph to `path` (verified with OpenCV before it is kept)."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, meta, Path(tmp) / "digikam.onnx", "digikam", opset)
        scratch = Path(tmp) / path.name
        report = convert_onnx_to_tf(onnx_path, scratch, venv_root)
        check_ops(path, report["ops"])
        if verify:
            verify_tf(model, meta, scratch)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(scratch, path)
    return path
