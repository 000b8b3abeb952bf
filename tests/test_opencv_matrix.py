"""The OpenCV compatibility matrix: digiKam's preprocessing, the measured operator gaps, and exported models
run in every OpenCV release digiKam links (marked `compat`: the release venvs are built once, then reused)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from skimage import data

from iqs.core.preprocess import digikam_blob
from iqs.deploy.compat.command import compat_photos, fixed_seed_model, read_blobs, write_photos
from iqs.deploy.compat.opencv_matrix import (
    MatrixError,
    compare,
    ensure_venv,
    failures,
    run_matrix,
)
from iqs.deploy.compat.opencv_worker import digikam_preprocess
from iqs.deploy.export import exporter as export
from iqs.deploy.export.onnx_ops import GAPS, OPENCV_RELEASES, PORTABLE, graph_ops, problems, release_name

REAL_PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field"]


def test_worker_preprocessing_is_digikam_blob_bit_for_bit() -> None:
    """The standalone worker mirrors digiKam's C++ call for call; the project's one definition must agree."""
    photos = [getattr(data, name)() for name in REAL_PHOTOS]
    photos = [
        cv2.cvtColor(np.dstack([p] * 3) if p.ndim == 2 else p[:, :, :3], cv2.COLOR_RGB2BGR) for p in photos
    ]
    photos += compat_photos(8)
    for bgr in photos:
        want, got = digikam_blob(bgr), digikam_preprocess(bgr)
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape == (1, 3, 299, 299)
        np.testing.assert_array_equal(got, want)
    # every 8-bit value, against the C++ arithmetic: x * (1.0F / 127.5F) - 1 in float32, not x / 127.5 - 1
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    got = digikam_blob(cv2.resize(ramp, (299, 299), interpolation=cv2.INTER_NEAREST_EXACT))
    values = np.unique(got)
    cpp = np.arange(256, dtype=np.float32) * (np.float32(1) / np.float32(127.5)) - np.float32(1)
    np.testing.assert_array_equal(values, np.unique(cpp))


def _single_op_graph(op: str) -> onnx.ModelProto:
    """A one-node graph (1, 3, 299, 299) -> something with the operator form a `GAPS` entry names."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 299, 299])
    inits: list[TensorProto] = []
    nodes = []
    out_shape: list[int] = [1, 3, 299, 299]
    if op == "Ceil":
        return _dynamic_same_conv_graph()
    if op == "Clip":
        inits += [numpy_helper.from_array(np.float32(v), n) for v, n in ((0.0, "lo"), (0.5, "hi"))]
        nodes.append(helper.make_node("Clip", ["input", "lo", "hi"], ["out"]))
    elif op == "Squeeze":
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axes"))
        nodes.append(helper.make_node("Squeeze", ["input", "axes"], ["out"]))
        out_shape = [3, 299, 299]
    elif op == "LayerNormalization":
        inits += [
            numpy_helper.from_array(np.full(299, v, np.float32), n) for v, n in ((1.0, "g"), (0.0, "b"))
        ]
        nodes.append(helper.make_node("LayerNormalization", ["input", "g", "b"], ["out"], axis=-1))
    elif op == "ReduceMean":
        # 3 -> 24 channels at 75x75: a map size OpenCV 4.8.0 averages wrongly
        weight = np.random.default_rng(0).normal(size=(24, 3, 1, 1)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, "w"))
        nodes.append(helper.make_node("Conv", ["input", "w"], ["maps"], kernel_shape=[1, 1], strides=[4, 4]))
        nodes.append(helper.make_node("ReduceMean", ["maps"], ["out"], axes=[2, 3], keepdims=0))
        out_shape = [1, 24]
    else:
        raise KeyError(op)
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, f"probe-{op}", [x], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _dynamic_same_conv_graph() -> onnx.ModelProto:
    """timm's Conv2dSame as traced: its pads come from Shape -> Div -> Ceil -> ... -> Pad."""
    import io

    from timm.layers.conv2d_same import Conv2dSame

    torch.manual_seed(0)
    buf = io.BytesIO()
    conv = Conv2dSame(3, 4, 3, stride=2).eval()
    torch.onnx.export(
        conv, (torch.zeros(1, 3, 299, 299),), buf, input_names=["input"], opset_version=17, dynamo=False
    )
    model = onnx.load_from_string(buf.getvalue())
    assert "Ceil" in graph_ops(model)
    return model


def _probe_reference(op: str, model: onnx.ModelProto, blob: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": blob})[0].ravel()


@pytest.mark.parametrize("gap", GAPS, ids=lambda g: g.op)
def test_graph_check_names_each_gap_and_its_releases(gap) -> None:
    model = _single_op_graph(gap.op)
    found = [line for line in problems(model) if line.startswith(gap.op)]
    assert len(found) == 1, problems(model)
    assert all(f"OpenCV {release_name(r)}" in found[0] for r in gap.lacking)
    spared = [r for r in OPENCV_RELEASES if r not in gap.lacking]
    assert not any(f"OpenCV {release_name(r)}:" in found[0] for r in spared)
    assert not [line for line in problems(model, releases=spared) if line.startswith(gap.op)]


def test_graph_check_refuses_untested_operators_and_passes_portable_ones() -> None:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])
    for op, ok in (("Relu", True), ("Tanh", False), ("HardSwish", False)):
        graph = helper.make_graph([helper.make_node(op, ["input"], ["out"], name="n0")], "g", [x], [y])
        found = problems(helper.make_model(graph))
        assert (found == []) == ok, found
        if not ok:
            assert found[0].startswith(f"{op} (e.g. node 'n0'): not in the tested set")
    assert "Relu" in PORTABLE and not {g.op for g in GAPS if g.form is None} & PORTABLE


def test_export_refuses_a_backbone_marked_not_exportable(tmp_path: Path) -> None:
    from iqs.models import build_quality_model

    cfg = {
        "backbone": {"name": "test_efficientnet", "weights": "none", "exportable": False},
        "head": {"name": "classification"},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    model = build_quality_model(cfg).eval()
    assert model.meta["exportable"] is False
    with pytest.raises(export.ExportError, match="marked `exportable: false`") as err:
        export.export_onnx(model, model.meta, tmp_path / "m.contract.onnx", "contract_onnx")
    assert "Tested OpenCV releases: 4.6.0" in str(err.value)
    assert not (tmp_path / "m.contract.onnx").exists()


def test_compare_counts_agreement_and_probability_gap() -> None:
    from iqs.deploy.compat.opencv_matrix import ModelRun

    run = ModelRun("4.6.0.66", "m.onnx", classes=[0, 1, 2], probs=[[1, 0, 0], [0, 1, 0], [0.2, 0.3, 0.5]])
    run.image_errors = [None, None, None]
    row = compare(
        run, {"predict": [0, 1, 1], "torch": [0, 1, 2]}, np.array([[1, 0, 0], [0, 1, 0], [0.1, 0.6, 0.3]])
    )
    assert row.agree == {"predict": 2, "torch": 3} and row.total == 3
    assert row.max_prob_diff == pytest.approx(0.3)
    assert failures([row]) == ["OpenCV 4.6.0: 2/3 classes equal predict"]
    broken = compare(ModelRun("4.8.0.76", "m.onnx", error="parse error"), {"predict": [0, 1, 1]})
    assert failures([broken]) == ["OpenCV 4.8.0 cannot load it: parse error"]


# ---------------------------------------------------------------- the matrix itself (venvs built once)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_photos(compat_photos(9), tmp_path_factory.mktemp("photos"))


@pytest.mark.slow
@pytest.mark.compat
def test_every_gap_fails_exactly_in_the_declared_releases(tmp_path: Path, photos: list[Path]) -> None:
    """The data in onnx_ops.GAPS is measured: each probe fails (or computes wrongly) only where declared."""
    files = {}
    for gap in GAPS:
        files[gap.op] = tmp_path / f"probe-{gap.op}.onnx"
        onnx.save(_single_op_graph(gap.op), str(files[gap.op]))
    # a 299x299 photo: digiKam's resize is then a copy, the same in every release (4.x and 5.x pick
    # different source pixels when INTER_NEAREST_EXACT really resizes), so every release sees this blob
    square = write_photos(
        [cv2.resize(cv2.imread(str(photos[0])), (299, 299), interpolation=cv2.INTER_AREA)], tmp_path / "sq"
    )
    runs = run_matrix(files.values(), square, progress=False)
    blob = read_blobs(square)
    for gap in GAPS:
        reference = _probe_reference(gap.op, onnx.load(str(files[gap.op])), blob)
        for release in OPENCV_RELEASES:
            run = runs[release][str(files[gap.op])]
            works = run.loads and run.probs[0] is not None
            if works:
                works = np.allclose(np.asarray(run.probs[0]), reference, atol=1e-3)
            assert works == (release not in gap.lacking), (gap.op, release, run.error or run.image_errors)


@pytest.mark.slow
@pytest.mark.compat
# the distribution head (its expectation is on the digikam path) on the demo's pooled stages; a score head's
# three profiles run in every release in test_decision_cuts (baked cuts) and its .pb in test_tf_export;
# `make compat` runs all three heads
@pytest.mark.parametrize("head", ["distribution"])
def test_demo_exports_agree_in_every_release(head: str, tmp_path: Path, photos: list[Path]) -> None:
    """The demo config's profiles (the .pb digiKam loads, the contract and full ONNX): every release loads them
    and gives the classes of `iqs predict` (onnxruntime) and PyTorch, with one net reused for all photos."""
    from iqs.core.config import compose
    from iqs.deploy.compat.command import predict_reference, torch_reference

    cfg = compose("train", ["experiment=demo", f"head={head}"])
    blobs = read_blobs(photos)
    model = fixed_seed_model({k: cfg[k] for k in ("backbone", "head", "thresholds")}, blobs)
    profiles = ["digikam", "full", "contract_onnx"]
    files = export.export_model(model, model.meta, tmp_path, "demo", profiles, 17, "test")
    assert not {"Ceil", "Clip", "Min", "Squeeze", "ReduceMean", "Identity"} & set(
        graph_ops(onnx.load(str(files["contract_onnx"])))
    )
    torch_cls, torch_probs = torch_reference(model, blobs)
    ort_cls, ort_probs = predict_reference(files["full"], photos)
    assert set(torch_cls.tolist()) == {0, 1, 2}, "classes must be spread for the proof to mean anything"
    np.testing.assert_array_equal(ort_cls, torch_cls)
    runs = run_matrix([files[p] for p in profiles], photos, progress=False)
    for release, by_model in runs.items():
        for path, run in by_model.items():
            row = compare(run, {"predict": ort_cls, "torch": torch_cls}, ort_probs)
            assert failures([row]) == [], (release, path)
            # OpenCV 4.x's INTER_NEAREST_EXACT picks a few other source pixels than 5.x (which iqs predict and
            # the references use here): probabilities move by a few 1e-3, classes must not
            assert row.max_prob_diff < 2e-2, (release, path, row.max_prob_diff)


FAKE_WORKER = """
import json, os, signal, sys
job = json.load(sys.stdin)
with open(os.environ["CALLS"], "a") as f:
    f.write(str(len(job["models"])) + "\\n")
if any("crash" in m["model"] for m in job["models"]):
    os.kill(os.getpid(), signal.SIGSEGV)  # what a crash inside OpenCV does to the worker
runs = [{"model": m["model"], "error": None, "images": [{"class": 1, "probs": [0, 1, 0]}]} for m in job["models"]]
sys.stdout.write(json.dumps({"runs": runs}))
"""


def test_one_worker_runs_a_release_s_models_and_a_crash_costs_its_own_cell(tmp_path, monkeypatch) -> None:
    """run_workers: one process for all models of a release; when it dies, one process per model, so
    the models beside the crashing one still get their results."""
    import sys

    from iqs.deploy.compat import opencv_matrix

    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\n{FAKE_WORKER}")
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setattr(opencv_matrix, "output_layer", lambda model: None)

    runs = opencv_matrix.run_workers(fake, ["a.onnx", "b.pb"], ["x.png"], "4.6.0.66")
    assert [(r.model, r.loads, r.classes) for r in runs] == [("a.onnx", True, [1]), ("b.pb", True, [1])]
    assert calls.read_text().split() == ["2"]

    calls.unlink()
    runs = opencv_matrix.run_workers(fake, ["a.onnx", "crash.onnx", "b.pb"], ["x.png"], "4.6.0.66")
    assert [r.loads for r in runs] == [True, False, True]
    assert runs[1].model == "crash.onnx" and runs[1].error.startswith("worker exited with -11")
    assert calls.read_text().split() == ["3", "1", "1", "1"]


@pytest.mark.slow
@pytest.mark.compat
def test_pip_failure_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="pip needs the package registry"):
        ensure_venv("0.0.0.1", root=tmp_path)


def test_static_padding_matches_dynamic_same_layers() -> None:
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    from iqs.deploy.export.rewrites import DYNAMIC_SAME, export_copy

    torch.manual_seed(0)
    for size in (17, 224, 299):
        net = torch.nn.Sequential(
            Conv2dSame(3, 8, 3, stride=2),
            torch.nn.ReLU6(),
            Conv2dSame(8, 8, 5, stride=1, groups=8),  # odd kernel, stride 1: symmetric, folded into the conv
            MaxPool2dSame(3, stride=2),
            Conv2dSame(8, 4, 4, stride=2, dilation=1),
            AvgPool2dSame(2, stride=2),
        ).eval()
        x = torch.randn(1, 3, size, size) * 4
        fixed = export_copy(net, x)
        assert not any(isinstance(m, (*DYNAMIC_SAME, torch.nn.ReLU6)) for m in fixed.modules())
        assert isinstance(fixed[2], torch.nn.Conv2d) and fixed[2].padding == (2, 2)
        with torch.no_grad():
            torch.testing.assert_close(fixed(x), net(x), atol=1e-5, rtol=1e-5)
