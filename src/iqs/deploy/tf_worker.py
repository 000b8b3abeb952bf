"""ONNX -> TensorFlow frozen graph that OpenCV's TF importer reads; runs inside the `tf` extra's own venv.

Standalone on purpose: `tf_export` runs this file with the Python of its cached venv
(iqs.deploy.tool_venvs), which holds only the `tf` extra (onnx2tf and its pinned TensorFlow, protobuf 4, numpy 1), so it imports nothing from `iqs`.

    <venv>/bin/python tf_worker.py model.onnx out.pb samples.npy report.json

`samples.npy` is (N, 299, 299, 3) float32 in [-1, 1]: onnx2tf runs the ONNX graph on it while converting
(it picks some layouts from the values), and would otherwise download sample images from GitHub.

The network is blocked before anything is imported: the converter must work offline.
"""

from __future__ import annotations

import json
import socket
import sys


class NetworkBlocked(OSError):
    pass


def block_network() -> None:
    """Every socket connect and name lookup in this process raises `NetworkBlocked`."""

    def refuse(*args, **kwargs):
        raise NetworkBlocked("iqs tf_worker: network access is blocked; the TF conversion must run offline")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def convert(onnx_path: str, pb_path: str, samples_path: str) -> dict:
    import collections

    import numpy as np
    import onnx2tf
    import onnxsim
    import tensorflow as tf

    samples = np.load(samples_path)
    graph, spec = _frozen_graph(onnx_path, samples)
    _full_constants(graph)
    rewritten = _rewrite_const_minus_x(graph)
    with open(pb_path, "wb") as f:
        f.write(graph.SerializeToString())
    reread, placeholders, output, tf_probs = _tf_answer(pb_path, spec, samples)
    return {
        "ops": dict(collections.Counter(node.op for node in reread.node)),
        "inputs": {name: [int(d) for d in spec.shape] for name in placeholders},
        "output": output,
        "sub_const_rewrites": rewritten,
        "tf_probs": tf_probs,
        "versions": {
            "tensorflow": tf.__version__,
            "onnx2tf": onnx2tf.__version__,
            "onnxsim": onnxsim.__version__,
        },
    }


def _frozen_graph(onnx_path: str, samples):
    """The ONNX model through onnx-simplifier and onnx2tf, frozen to a GraphDef; and its input spec."""
    import os
    import tempfile

    import onnx
    import onnx2tf
    import onnx2tf.onnx2tf as onnx2tf_main
    import onnxsim
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # onnx2tf fetches validation images from GitHub whenever the input is an NHWC image; hand it ours.
    onnx2tf_main.download_test_image_data = lambda: samples

    # onnx-simplifier folds the static pads into the convolutions (onnx2tf's own call goes through a CLI
    # that is not on PATH inside this venv, so it is done here, explicitly).
    simplified, ok = onnxsim.simplify(onnx.load(onnx_path))
    if not ok:
        raise RuntimeError("onnx-simplifier could not validate the simplified graph")
    with tempfile.TemporaryDirectory() as tmp:
        simple_path = os.path.join(tmp, "simplified.onnx")
        onnx.save(simplified, simple_path)
        model = onnx2tf.convert(
            input_onnx_file_path=simple_path,
            output_folder_path=os.path.join(tmp, "saved_model"),
            not_use_onnxsim=True,
            disable_model_save=True,
            non_verbose=True,
            verbosity="error",
        )
    spec = tf.TensorSpec(model.inputs[0].shape, tf.float32, name="input")
    frozen = convert_variables_to_constants_v2(tf.function(lambda x: model(x)).get_concrete_function(spec))
    return frozen.graph.as_graph_def(), spec


def _full_constants(graph) -> None:
    """Fix 1: TensorFlow stores a constant whose values are all equal as ONE value plus a shape (e.g. the
    resize size [224, 224]); OpenCV's importer then reads one value ("outSize.total() == 2" fails in
    parseResize, 4.6-5.0). Re-encode every constant in full."""
    from tensorflow.python.framework import tensor_util

    for node in graph.node:
        if node.op == "Const":
            full = tensor_util.make_tensor_proto(tensor_util.MakeNdarray(node.attr["value"].tensor))
            node.attr["value"].tensor.CopyFrom(full)


def _rewrite_const_minus_x(graph) -> int:
    """Fix 2: OpenCV's importer computes x - c for Sub(c, x) as well as Sub(x, c) (measured in 4.6-5.0: the
    class logits t1 - s came out as s - t1). c - x becomes (-1 * x) + c, which IEEE arithmetic makes exact.
    Returns how many Sub nodes were rewritten."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util

    consts = {node.name for node in graph.node if node.op == "Const"}
    rewritten = 0
    for node in list(graph.node):
        if node.op == "Sub" and node.input[0] in consts and node.input[1] not in consts:
            const, x = node.input[0], node.input[1]
            minus_one = graph.node.add(name=f"{node.name}/minus_one", op="Const")
            minus_one.attr["dtype"].type = tf.float32.as_datatype_enum
            minus_one.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(np.float32(-1.0)))
            negated = graph.node.add(name=f"{node.name}/negated", op="Mul", input=[x, minus_one.name])
            negated.attr["T"].type = tf.float32.as_datatype_enum
            node.op = "AddV2"
            del node.input[:]
            node.input.extend([negated.name, const])
            rewritten += 1
    return rewritten


def _tf_answer(pb_path: str, spec, samples):
    """TensorFlow's own answer on the samples, from the file just written: the graph as read back, its
    input names, its output name and the per-sample outputs."""
    import tensorflow as tf

    reread = tf.compat.v1.GraphDef()
    with open(pb_path, "rb") as f:
        reread.ParseFromString(f.read())
    placeholders = [n.name for n in reread.node if n.op == "Placeholder"]
    consumed = {name.split(":")[0].lstrip("^") for node in reread.node for name in node.input}
    sinks = [n.name for n in reread.node if n.name not in consumed and n.op != "Const"]
    if len(placeholders) != 1 or len(sinks) != 1:
        raise RuntimeError(f"expected one input and one output, got inputs {placeholders}, outputs {sinks}")
    output = sinks[0]
    outputs = tf.compat.v1.wrap_function(
        lambda x: tf.graph_util.import_graph_def(
            reread, {placeholders[0]: x}, return_elements=[f"{output}:0"]
        ),
        [tf.TensorSpec(spec.shape, tf.float32)],
    )
    tf_probs = [outputs(tf.constant(samples[i : i + 1]))[0].numpy()[0].tolist() for i in range(len(samples))]
    return reread, placeholders, output, tf_probs


def main(argv: list[str]) -> int:
    block_network()
    onnx_path, pb_path, samples_path, report_path = argv
    report = convert(onnx_path, pb_path, samples_path)
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
