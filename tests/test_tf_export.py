"""The `digikam` profile: the TensorFlow frozen graph every digiKam 8.0-9.2 loads, written without TensorFlow
(iqs.deploy.export.tf_graph) and run as digiKam runs it in every OpenCV release it links.

The OpenCV venvs are built once per machine (iqs.deploy.compat.tool_venvs) and reused.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from tensorboard.compat.proto import graph_pb2

from iqs.deploy.compat.command import (
    compat_photos,
    fixed_seed_model,
    read_blobs,
    torch_reference,
    write_photos,
)
from iqs.deploy.compat.opencv_matrix import compare, ensure_venv, failures, run_matrix, run_on_blobs
from iqs.deploy.export import exporter as export
from iqs.deploy.export import tf_export
from iqs.deploy.export.onnx_ops import OPENCV_RELEASES, release_name
from iqs.deploy.export.onnx_wrappers import wrap
from iqs.deploy.export.tf_graph import WRITERS, GraphError, onnx_to_graphdef
from test_export import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
LITE0_REGRESSION = {  # 224 px inside: the graph resizes digiKam's 299 px (ResizeBilinear)
    "backbone": {"name": "tf_efficientnet_lite0", "weights": "packaged"},
    "head": {"name": "regression"},
    "thresholds": {"t1": 5.0, "t2": 6.0},
}


def _graph(nodes, inits, out_shape, opset: int = 17) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "t", [x], [y], [numpy_helper.from_array(v, n) for n, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _parse(graph) -> graph_pb2.GraphDef:
    return graph_pb2.GraphDef.FromString(graph.SerializeToString())


def test_unwritten_operator_is_refused_by_name() -> None:
    model = _graph([helper.make_node("Tanh", ["input"], ["probs"], name="squash")], {}, [1, 3, 8, 8])
    with pytest.raises(GraphError, match=r"ONNX operator Tanh \(node 'squash'\).*OpenCV's TF importer"):
        onnx_to_graphdef(model)
    assert "Tanh" not in WRITERS


def test_constants_are_full_and_integers_in_int_val() -> None:
    """OpenCV's importer reads ConcatV2's axis from int_val only and a one-value-plus-shape constant as one
    number: integers are written element by element, float weights as raw content, nothing compressed."""
    inits = {
        "w": np.ones((2, 3, 1, 1), np.float32),  # all equal: TF would store it as one value
        "b": np.zeros(2, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv"),
        helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Concat", ["f", "f"], ["cat"], axis=1, name="cat"),
        helper.make_node("Softmax", ["cat"], ["probs"], axis=-1, name="soft"),
    ]
    graph = _parse(onnx_to_graphdef(_graph(nodes, inits, [1, 4])))
    consts = {n.name: n.attr["value"].tensor for n in graph.node if n.op == "Const"}
    for tensor in consts.values():
        if tensor.dtype == 3:  # DT_INT32
            size = int(np.prod([d.size for d in tensor.tensor_shape.dim]))
            assert len(tensor.int_val) == size and not tensor.tensor_content
        elif tensor.tensor_shape.dim:
            assert tensor.tensor_content and not tensor.float_val
    ops = [n.op for n in graph.node if n.op != "Const"]
    assert ops == ["Placeholder", "Conv2D", "BiasAdd", "Mean", "Reshape", "ConcatV2", "Softmax"]
    placeholder = graph.node[0]
    assert [d.size for d in placeholder.attr["shape"].shape.dim] == [1, 8, 8, 3]  # NHWC, as Keras wrote it
    filt = np.frombuffer(consts["conv/filter"].tensor_content, np.float32)
    assert [d.size for d in consts["conv/filter"].tensor_shape.dim] == [1, 1, 3, 2] and filt.size == 6  # HWIO


def test_constant_minus_tensor_is_rewritten() -> None:
    """OpenCV's importer computes c - x as x - c: it is written as (-1 * x) + c."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Sub", ["six", "f"], ["d"], name="flip"),
        helper.make_node("Softmax", ["d"], ["probs"], axis=-1),
    ]
    graph = _parse(onnx_to_graphdef(_graph(nodes, {"six": np.float32(6.0)}, [1, 3])))
    flip = next(n for n in graph.node if n.name == "flip")
    assert flip.op == "AddV2" and flip.input[0] == "flip/negated" and "Sub" not in {n.op for n in graph.node}


def test_pb_route_needs_no_tensorflow() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(
        r.split("=")[0].split("<")[0].split(">")[0].strip() == "tensorflow" for r in deps["dependencies"]
    )
    assert "tf" not in deps.get("optional-dependencies", {})


def _readnet_calls() -> set[str]:
    """Every `readNet*` importer the project's code calls (source files, AST), by name."""
    names: set[str] = set()
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and re.fullmatch(r"readNet\w*", node.attr):
                names.add(node.attr)
    return names


@pytest.mark.slow
@pytest.mark.compat
def test_no_code_path_calls_an_importer_a_supported_release_lacks() -> None:
    """OpenCV 5.1 dropped readNetFromTensorflow: every importer the code calls exists in every release digiKam
    links, and the project's own OpenCV is held below 5.1 by pyproject.toml."""
    called = _readnet_calls()
    assert {"readNetFromTensorflow", "readNet"} <= called
    for release in OPENCV_RELEASES:
        probe = (
            "import cv2, json, sys; print(json.dumps([n for n in sys.argv[1:] if not hasattr(cv2.dnn, n)]))"
        )
        out = subprocess.run(
            [str(ensure_venv(release)), "-c", probe, *sorted(called)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(out.stdout) == [], release
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (opencv,) = [d for d in deps if d.startswith("opencv-python-headless")]
    assert "<5.1" in opencv.replace(" ", "")
    import cv2

    assert tuple(int(v) for v in cv2.__version__.split(".")[:2]) < (5, 1)


@pytest.mark.slow
def test_export_never_asks_the_project_opencv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The .pb is verified in the releases' venvs only: a project OpenCV without the TF importer (5.1) must
    not matter, and a wrong graph is refused with the release that saw it."""
    import cv2
    from tests.conftest import tiny_quality_model

    monkeypatch.delattr(cv2.dnn, "readNetFromTensorflow", raising=False)
    model = tiny_quality_model()
    path = tf_export.export_pb(model, model.meta, tmp_path / "m.digikam.pb", releases=("4.6.0.66",))
    assert path.is_file() and not list(tmp_path.glob(".*"))
    other = tiny_quality_model("classification")  # the same file checked against another model: refused
    with pytest.raises(export.ExportError, match=r"OpenCV 4\.6\.0's readNetFromTensorflow differs"):
        tf_export.verify_pb(other, other.meta, path, ("4.6.0.66",))


@pytest.mark.slow
@pytest.mark.compat
def test_digikam_pb_in_every_release(tmp_path: Path) -> None:
    """The default export's .pb in every OpenCV release digiKam links, run by digiKam's steps with one net:
    the classes of PyTorch and of onnxruntime (contract_onnx) on 20 photos, and PyTorch's numbers on the
    same blobs in every release."""
    photos = write_photos(compat_photos(20, seed=1), tmp_path / "photos")
    blobs = read_blobs(photos)
    model = fixed_seed_model(LITE0_REGRESSION, blobs)  # a score head: score -> class is in the graph
    ckpt = save_checkpoint(model, tmp_path / "best.ckpt")
    out_dir = tmp_path / "exports"
    # checked on export in one release (the digikam profile's own list is the default); below, every release
    # runs it, on photos by digiKam's steps and on blobs against PyTorch's numbers
    args = [f"checkpoint={ckpt}", f"out_dir={out_dir}", "profiles=[digikam,contract_onnx]"]
    assert export.main([*args, "verify_opencv=[4.6.0.66]"]) == 0
    pb = out_dir / "best.digikam.pb"
    assert pb.is_file() and pb.name in (out_dir / "MODEL_CARD.md").read_text()

    torch_cls, torch_probs = torch_reference(model, blobs)
    assert set(torch_cls.tolist()) == {0, 1, 2}, "classes must be spread for the proof to mean anything"
    session = ort.InferenceSession(str(out_dir / "best.contract.onnx"), providers=["CPUExecutionProvider"])
    ort_cls = np.array([session.run(None, {"input": b[None]})[0][0] for b in blobs]).argmax(1)
    runs = run_matrix([pb], photos, progress=False)
    assert set(runs) == set(OPENCV_RELEASES)
    for release, by_model in runs.items():
        row = compare(by_model[str(pb)], {"onnxruntime": ort_cls, "torch": torch_cls}, torch_probs)
        assert failures([row]) == [], release
        # 4.x's INTER_NEAREST_EXACT picks a few other source pixels than 5.x (see test_opencv_matrix)
        assert row.max_prob_diff < 2e-2, (release, row.max_prob_diff)
    with torch.no_grad():
        ref = wrap(model, dict(model.meta), "contract")(torch.from_numpy(blobs[:4])).numpy()
    for release, run in run_on_blobs(pb, blobs[:4], OPENCV_RELEASES).items():
        assert np.abs(np.array(run.probs) - ref).max() < 1e-4, release_name(release)
