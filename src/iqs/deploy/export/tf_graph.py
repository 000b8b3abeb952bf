"""An ONNX graph in digiKam's contract -> the TensorFlow frozen graph (GraphDef) that digiKam loads.

Every digiKam from 8.0 to 9.2 reads `weights_inceptionv3_299.pb` with `cv::dnn::readNetFromTensorflow`
(../shared/digikam.md). A frozen graph is only a protobuf `GraphDef`: nodes with an op name, inputs and
attributes, weights inlined as `Const` tensors. OpenCV's TF importer reads a small op set, so this module
writes that op set directly from the exported ONNX graph, with the GraphDef/NodeDef/TensorProto messages that
`tensorboard.compat.proto` ships (the same .proto files as TensorFlow's, without TensorFlow). No TensorFlow,
no converter venv: an export on a fresh machine takes seconds, and every file is checked where digiKam runs
it, in the OpenCV 4.x releases of `onnx_ops.OPENCV_RELEASES` (tf_export.verify_pb, tests/test_tf_export.py).

Layout: the placeholder is NHWC (1x299x299x3), as in digiKam's stock Keras graph. OpenCV's importer keeps its
blobs NCHW and maps NHWC layers onto them, so digiKam's `blobFromImage` blob (1x3x299x299) is fed as is. Every
4-D activation is NHWC here: weights are transposed (OIHW -> HWIO), channel axes and paddings are moved.

What is written, and why each rule (all measured in OpenCV 4.6-5.0 by the tests):
- Constants are always written in full, never as one repeated value plus a shape: the importer reads a
  `[224, 224]` resize size stored that way as one number ("outSize.total() == 2"). Integers go in `int_val`
  (ConcatV2's axis is read from there only), float weights in `tensor_content`.
- `x - c` becomes `x + (-c)` and `c - x` becomes `(-1 * x) + c`: the importer computes `c - x` as `x - c`.
- Constant sub-graphs (the pads that the exporter computes with ConstantOfShape/Slice/Cast) are folded with
  ONNX's reference evaluator before conversion; reshapes to the shape a tensor already has are dropped.
- An operator outside `WRITERS` is refused with its name: nothing unknown reaches a digiKam.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

# Written into the GraphDef's VersionDef: the TF graph version of the stock model's era (TF 2.x writes 1xxx);
# OpenCV's importer ignores it, TensorFlow accepts any producer >= 0.
GRAPH_PRODUCER = 1205
INPUT_NAME = "input"
OUTPUT_NAME = "probs"


class GraphError(ValueError):
    """The ONNX graph uses something that the frozen-graph writer does not write (named in the message)."""


def _proto():
    # imported lazily: only an export needs protobuf messages of TensorFlow's
    from tensorboard.compat.proto import attr_value_pb2, graph_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

    return attr_value_pb2, graph_pb2, tensor_pb2, tensor_shape_pb2, types_pb2


@dataclass
class Tensor:
    """A converted ONNX tensor: its TF node name, its ONNX (NCHW) shape and whether TF holds it as NHWC."""

    name: str
    shape: tuple[int, ...]
    nhwc: bool = False


@dataclass
class Writer:
    """Appends NodeDefs to one GraphDef, with unique names and the attributes OpenCV's importer reads."""

    graph: object = None
    used: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        _, graph_pb2, _, _, _ = _proto()
        self.graph = graph_pb2.GraphDef()
        self.graph.versions.producer = GRAPH_PRODUCER

    def unique(self, name: str) -> str:
        base = "".join(c if c.isalnum() or c in "_./-" else "_" for c in name).strip("/") or "node"
        candidate, i = base, 1
        while candidate in self.used:
            candidate, i = f"{base}_{i}", i + 1
        self.used.add(candidate)
        return candidate

    def node(self, op: str, name: str, inputs: Sequence[str] = (), **attrs) -> str:
        attr_value_pb2, _, _, _, types_pb2 = _proto()
        node = self.graph.node.add(op=op, name=self.unique(name), input=list(inputs))
        for key, value in attrs.items():
            slot: attr_value_pb2.AttrValue = node.attr[key]
            if isinstance(value, bool):
                slot.b = value
            elif isinstance(value, int):
                slot.i = value
            elif isinstance(value, str):
                slot.s = value.encode()
            elif isinstance(value, _Type):
                slot.type = getattr(types_pb2, value.name)
            elif isinstance(value, list):
                slot.list.i.extend(int(v) for v in value)
            else:
                raise TypeError(f"attribute {key}={value!r}")
        return node.name

    def const(self, name: str, value: np.ndarray) -> str:
        """A Const node holding `value` in full (float32 or int32)."""
        _, _, tensor_pb2, tensor_shape_pb2, types_pb2 = _proto()
        array = np.ascontiguousarray(value)
        if array.dtype.kind == "f":
            array, dtype = array.astype("<f4"), types_pb2.DT_FLOAT
        else:
            array, dtype = array.astype("<i4"), types_pb2.DT_INT32
        tensor = tensor_pb2.TensorProto(
            dtype=dtype,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in array.shape]
            ),
        )
        # Integers (axes, shapes, paddings) go in `int_val`, one entry per element: some of the importer's
        # parsers read `int_val().Get(0)` directly (ConcatV2's axis; a crash on tensor_content). Float
        # scalars go in `float_val`, other floats in `tensor_content`; nothing is stored as one repeated value.
        if dtype == types_pb2.DT_INT32:
            tensor.int_val.extend(int(v) for v in array.reshape(-1))
        elif array.ndim == 0:
            tensor.float_val.append(float(array))
        else:
            tensor.tensor_content = array.tobytes()
        name = self.node(
            "Const", name, dtype=_Type("DT_FLOAT" if dtype == types_pb2.DT_FLOAT else "DT_INT32")
        )
        node = self.graph.node[-1]
        node.attr["value"].tensor.CopyFrom(tensor)
        return name

    def placeholder(self, name: str, shape: Sequence[int]) -> str:
        _, _, _, tensor_shape_pb2, _ = _proto()
        out = self.node("Placeholder", name, dtype=FLOAT)
        self.graph.node[-1].attr["shape"].shape.CopyFrom(
            tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape]
            )
        )
        return out


@dataclass(frozen=True)
class _Type:
    name: str


FLOAT = _Type("DT_FLOAT")
INT32 = _Type("DT_INT32")


# ---------------------------------------------------------------- folding and shapes


def fold_constants(model: onnx.ModelProto) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """The nodes that depend on the input, and every constant (initializers, Constant nodes, `Shape` of a
    tensor whose shape is static, and nodes whose inputs are all constant, evaluated with ONNX's reference
    implementation). The input is digiKam's fixed 1x3x299x299, so a resize's size arithmetic folds away."""
    from onnx.reference import ReferenceEvaluator

    consts = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    known = _inferred_shapes(model)
    opset = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    live: list[onnx.NodeProto] = []
    for node in model.graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type == "Shape" and inputs[0] in known and not node.attribute:
            consts[node.output[0]] = np.array(known[inputs[0]], dtype=np.int64)
        elif node.op_type == "Constant" or (inputs and all(name in consts for name in inputs)):
            single = onnx.helper.make_model(
                onnx.helper.make_graph(
                    [node],
                    "fold",
                    [],
                    [
                        onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                        for o in node.output
                    ],
                ),
                opset_imports=opset,
            )
            values = ReferenceEvaluator(single).run(None, {n: consts[n] for n in inputs})
            consts.update(zip(node.output, (np.asarray(v) for v in values), strict=True))
        else:
            live.append(node)
    return live, consts


def static_shapes(
    model: onnx.ModelProto, live: Sequence[onnx.NodeProto], consts: dict[str, np.ndarray]
) -> dict[str, tuple[int, ...]]:
    """Every live tensor's static shape, by ONNX shape inference on the folded graph (input 1x3x299x299)."""
    used = {name for node in live for name in node.input}
    graph = onnx.helper.make_graph(
        list(live),
        "folded",
        list(model.graph.input),
        list(model.graph.output),
        [numpy_helper.from_array(v, n) for n, v in consts.items() if n in used],
    )
    folded = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    return _inferred_shapes(folded, strict=True)


def _inferred_shapes(model: onnx.ModelProto, strict: bool = False) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, for the tensors whose every dimension ONNX shape inference can tell."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=strict)
    shapes: dict[str, tuple[int, ...]] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


# ---------------------------------------------------------------- the converter


class Converter:
    """Walks the live ONNX nodes in order and writes their TF equivalents."""

    def __init__(self, model: onnx.ModelProto) -> None:
        if len(model.graph.input) != 1 or len(model.graph.output) != 1:
            raise GraphError("expected one input and one output: export the `digikam` graph contract")
        self.live, self.consts = fold_constants(model)
        self.shapes = static_shapes(model, self.live, self.consts)
        self.out = Writer()
        self.tensors: dict[str, Tensor] = {}
        source = model.graph.input[0]
        shape = self.shapes[source.name]
        if len(shape) != 4 or shape[0] != 1:
            raise GraphError(f"input {source.name} has shape {shape}; expected 1x3xHxW")
        n, c, h, w = shape
        self.tensors[source.name] = Tensor(self.out.placeholder(INPUT_NAME, (n, h, w, c)), shape, nhwc=True)
        self.output = model.graph.output[0].name

    def run(self):
        for node in self.live:
            writer = WRITERS.get(node.op_type)
            if writer is None:
                raise GraphError(
                    f"ONNX operator {node.op_type} (node '{node.name}') has no TensorFlow equivalent that "
                    "OpenCV's TF importer is known to read; this backbone or head cannot be written as the .pb "
                    f"digiKam loads (written: {', '.join(sorted(WRITERS))})"
                )
            result = writer(self, node)
            self.tensors[node.output[0]] = result
        final = self.tensors[self.output]
        if final.nhwc or len(final.shape) != 2:
            raise GraphError(f"the output has shape {final.shape}; digiKam reads a 1x3 row")
        return self.out.graph

    # -- helpers

    def tensor(self, name: str) -> Tensor:
        if name not in self.tensors:
            raise GraphError(f"tensor {name} is neither computed nor constant")
        return self.tensors[name]

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self.shapes:
            raise GraphError(f"tensor {name} has no static shape after folding")
        return self.shapes[name]

    def result(self, node: onnx.NodeProto, tf_name: str, nhwc: bool) -> Tensor:
        return Tensor(tf_name, self.shape(node.output[0]), nhwc)

    def operand(self, value: np.ndarray, like: Tensor) -> np.ndarray:
        """A constant broadcast against `like`, moved to TF's layout: scalars stay scalars, per-channel
        constants of an NHWC map ([1, C, 1, 1]) become [C], and a row constant of a 2-D tensor becomes [N]."""
        value = np.asarray(value, dtype=np.float32)
        if value.size == 1:
            return value.reshape(())
        if like.nhwc:
            channels = like.shape[1]
            squeezed = value.reshape(-1)
            if value.ndim in (3, 4) and squeezed.size == channels and value.shape[-2:] == (1, 1):
                return squeezed
            raise GraphError(f"a constant of shape {value.shape} on a 4-D map is not per-channel")
        if squeezed_ok(value, like.shape):
            return value.reshape(-1)
        raise GraphError(f"a constant of shape {value.shape} does not broadcast row-wise onto {like.shape}")


def squeezed_ok(value: np.ndarray, shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and value.reshape(-1).size == shape[1] and value.shape[-1] == shape[1]


def _binary(c: Converter, node: onnx.NodeProto) -> Tensor:
    a_name, b_name = node.input[0], node.input[1]
    op = node.op_type
    a_const, b_const = a_name in c.consts, b_name in c.consts
    if a_const and b_const:  # pragma: no cover - folded before
        raise GraphError(f"{node.name}: constant operands were not folded")
    if not a_const and not b_const:
        a, b = c.tensor(a_name), c.tensor(b_name)
        gate = (
            op == "Mul" and a.nhwc and b.nhwc and a.shape[:2] == b.shape[:2] and 1 == b.shape[2] == b.shape[3]
        )
        if (a.nhwc != b.nhwc or c.shape(a_name) != c.shape(b_name)) and not gate:
            raise GraphError(f"{op} node '{node.name}' broadcasts {a.shape} against {b.shape}")
        tf_op = {"Add": "AddV2", "Sub": "Sub", "Mul": "Mul", "Div": "RealDiv"}[op]
        return c.result(node, c.out.node(tf_op, node.name, [a.name, b.name], T=FLOAT), a.nhwc)
    x = c.tensor(b_name if a_const else a_name)
    const = c.operand(c.consts[a_name if a_const else b_name], x)
    if op in ("Add", "Mul"):
        k = c.out.const(f"{node.name}/const", const)
        tf_op = "AddV2" if op == "Add" else "Mul"
        return c.result(node, c.out.node(tf_op, node.name, [x.name, k], T=FLOAT), x.nhwc)
    if op == "Sub" and not a_const:  # x - c as x + (-c)
        k = c.out.const(f"{node.name}/negated_const", -const)
        return c.result(node, c.out.node("AddV2", node.name, [x.name, k], T=FLOAT), x.nhwc)
    if op == "Sub":  # c - x as (-1 * x) + c: OpenCV's importer would compute x - c
        minus_one = c.out.const(f"{node.name}/minus_one", np.float32(-1.0))
        negated = c.out.node("Mul", f"{node.name}/negated", [x.name, minus_one], T=FLOAT)
        k = c.out.const(f"{node.name}/const", const)
        return c.result(node, c.out.node("AddV2", node.name, [negated, k], T=FLOAT), x.nhwc)
    if op == "Div" and not a_const:
        k = c.out.const(f"{node.name}/const", const)
        return c.result(node, c.out.node("RealDiv", node.name, [x.name, k], T=FLOAT), x.nhwc)
    raise GraphError(f"{op} node '{node.name}': a constant divided by a tensor is not written")


def _unary(tf_op: str) -> Callable[[Converter, onnx.NodeProto], Tensor]:
    def write(c: Converter, node: onnx.NodeProto) -> Tensor:
        x = c.tensor(node.input[0])
        return c.result(node, c.out.node(tf_op, node.name, [x.name], T=FLOAT), x.nhwc)

    return write


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pad(c: Converter, node: onnx.NodeProto, x: Tensor, pads: Sequence[int]) -> str:
    """An explicit zero Pad of an NHWC map; ONNX pads are (top, left, bottom, right)."""
    top, left, bottom, right = (int(p) for p in pads)
    if not any((top, left, bottom, right)):
        return x.name
    paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], dtype=np.int32)
    k = c.out.const(f"{node.name}/paddings", paddings)
    return c.out.node("Pad", f"{node.name}/pad", [x.name, k], T=FLOAT, Tpaddings=INT32)


def _pad_node(c: Converter, node: onnx.NodeProto) -> Tensor:
    """ONNX Pad (constant mode, zero value, spatial pads only) of an NCHW map."""
    x = c.tensor(node.input[0])
    mode = _attrs(node).get("mode", b"constant")
    pads = c.consts.get(node.input[1]) if len(node.input) > 1 else None
    value = c.consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(())
    if not x.nhwc or mode != b"constant" or pads is None or float(np.asarray(value).reshape(-1)[0]) != 0.0:
        raise GraphError(f"Pad node '{node.name}': only a constant zero pad of a 4-D map is written")
    begin, end = [int(v) for v in pads[:4]], [int(v) for v in pads[4:]]
    if begin[:2] != [0, 0] or end[:2] != [0, 0]:
        raise GraphError(f"Pad node '{node.name}' pads the batch or channel axis")
    return c.result(node, _pad(c, node, x, (begin[2], begin[3], end[2], end[3])), True)


def _conv(c: Converter, node: onnx.NodeProto) -> Tensor:
    x = c.tensor(node.input[0])
    if node.input[1] not in c.consts:
        raise GraphError(f"Conv node '{node.name}': weights are not constant")
    weight = c.consts[node.input[1]].astype(np.float32)
    bias = c.consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    a = _attrs(node)
    if any(d != 1 for d in a.get("dilations", [1, 1])) or a.get("auto_pad", b"NOTSET") not in (
        b"NOTSET",
        "NOTSET",
    ):
        raise GraphError(f"Conv node '{node.name}': dilated or auto-padded convolutions are not written")
    stride_h, stride_w = a.get("strides", [1, 1])
    padded = _pad(c, node, x, a.get("pads", [0, 0, 0, 0]))
    group, out_ch, in_per_group = int(a.get("group", 1)), weight.shape[0], weight.shape[1]
    in_ch = x.shape[1]
    common = dict(T=FLOAT, strides=[1, stride_h, stride_w, 1], padding="VALID", data_format="NHWC")
    if group == 1:
        k = c.out.const(f"{node.name}/filter", weight.transpose(2, 3, 1, 0))  # OIHW -> HWIO
        conv = c.out.node("Conv2D", node.name, [padded, k], dilations=[1, 1, 1, 1], **common)
    elif group == in_ch and in_per_group == 1 and out_ch % in_ch == 0:
        multiplier = out_ch // in_ch  # output channel c * multiplier + m, in both frameworks
        kh, kw = weight.shape[2:]
        filt = weight.reshape(in_ch, multiplier, kh, kw).transpose(2, 3, 0, 1)
        k = c.out.const(f"{node.name}/filter", filt)
        conv = c.out.node("DepthwiseConv2dNative", node.name, [padded, k], dilations=[1, 1, 1, 1], **common)
    else:
        raise GraphError(f"Conv node '{node.name}': grouped convolution (group={group}) is not written")
    if bias is not None:
        b = c.out.const(f"{node.name}/bias", bias.astype(np.float32))
        conv = c.out.node("BiasAdd", f"{node.name}/bias_add", [conv, b], T=FLOAT, data_format="NHWC")
    return c.result(node, conv, True)


def _pool(tf_op: str) -> Callable[[Converter, onnx.NodeProto], Tensor]:
    def write(c: Converter, node: onnx.NodeProto) -> Tensor:
        x = c.tensor(node.input[0])
        a = _attrs(node)
        pads = a.get("pads", [0, 0, 0, 0])
        if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])):
            raise GraphError(f"{node.op_type} node '{node.name}': ceil_mode or dilation is not written")
        if any(pads) and (tf_op == "MaxPool" or not a.get("count_include_pad", 0)):
            # a zero pad changes a max (negative maps) or a mean that excludes the padding
            raise GraphError(f"{node.op_type} node '{node.name}': padded {node.op_type} is not written")
        padded = _pad(c, node, x, pads)
        kh, kw = a["kernel_shape"]
        sh, sw = a.get("strides", [1, 1])
        out = c.out.node(
            tf_op,
            node.name,
            [padded],
            T=FLOAT,
            ksize=[1, kh, kw, 1],
            strides=[1, sh, sw, 1],
            padding="VALID",
            data_format="NHWC",
        )
        return c.result(node, out, True)

    return write


def _global_average_pool(c: Converter, node: onnx.NodeProto) -> Tensor:
    x = c.tensor(node.input[0])
    axes = c.out.const(f"{node.name}/axes", np.array([1, 2], dtype=np.int32))
    out = c.out.node("Mean", node.name, [x.name, axes], T=FLOAT, Tidx=INT32, keep_dims=True)
    return c.result(node, out, True)


def _flatten(c: Converter, node: onnx.NodeProto) -> Tensor:
    x = c.tensor(node.input[0])
    shape = c.shape(node.output[0])
    if x.nhwc and (int(_attrs(node).get("axis", 1)) != 1 or int(np.prod(x.shape[2:])) != 1):
        # NHWC and NCHW flatten orders agree only for 1x1 maps
        raise GraphError(f"Flatten node '{node.name}' of a {x.shape} map (not 1x1) is not written")
    return _reshape_to(c, node, x, shape)


def _reshape(c: Converter, node: onnx.NodeProto) -> Tensor:
    x = c.tensor(node.input[0])
    shape = c.shape(node.output[0])
    if x.nhwc:
        raise GraphError(f"Reshape node '{node.name}' of a 4-D map is not written; use Flatten after pooling")
    return _reshape_to(c, node, x, shape)


def _reshape_to(c: Converter, node: onnx.NodeProto, x: Tensor, shape: tuple[int, ...]) -> Tensor:
    if len(shape) != 2:
        # OpenCV 4.6 runs no 1-D element-wise ops: a 1-D tensor may only pass through to a 2-D one
        consumers = [n for n in c.live if node.output[0] in n.input]
        if not all(n.op_type in ("Reshape", "Flatten") for n in consumers):
            raise GraphError(f"{node.op_type} node '{node.name}' makes a {len(shape)}-D tensor; expected 2-D")
        return Tensor(x.name, shape, False)
    if x.shape == shape and not x.nhwc:
        return Tensor(x.name, shape, False)  # e.g. [1, 1] -> [1] -> [1, 1]: nothing to write
    k = c.out.const(f"{node.name}/shape", np.array(shape, dtype=np.int32))
    return Tensor(c.out.node("Reshape", node.name, [x.name, k], T=FLOAT, Tshape=INT32), shape, False)


def _concat(c: Converter, node: onnx.NodeProto) -> Tensor:
    parts = [c.tensor(n) for n in node.input]
    rank = len(parts[0].shape)
    axis = int(_attrs(node)["axis"]) % rank
    nhwc = parts[0].nhwc
    if any(p.nhwc != nhwc for p in parts):
        raise GraphError(f"Concat node '{node.name}' mixes 4-D maps and 2-D tensors")
    if nhwc and axis != 1:
        raise GraphError(f"Concat node '{node.name}' along axis {axis} of a 4-D map is not written")
    if axis != rank - 1 and not nhwc:
        raise GraphError(f"Concat node '{node.name}' along axis {axis} of a {rank}-D tensor is not written")
    # the channel axis is the last one in TF's layout; written as -1 because OpenCV's importer may still
    # take a flattened row for NHWC and move a positive axis (1 -> 2: out of range, a crash in 4.6-5.0)
    axis = -1
    k = c.out.const(f"{node.name}/axis", np.array(axis, dtype=np.int32))
    out = c.out.node("ConcatV2", node.name, [p.name for p in parts] + [k], T=FLOAT, N=len(parts), Tidx=INT32)
    return c.result(node, out, nhwc)


def _batch_norm(c: Converter, node: onnx.NodeProto) -> Tensor:
    """Inference batch norm as one per-channel Mul and Add (float64 folding, then float32)."""
    x = c.tensor(node.input[0])
    scale, bias, mean, var = (c.consts[n].astype(np.float64) for n in node.input[1:5])
    eps = float(_attrs(node).get("epsilon", 1e-5))
    gain = scale / np.sqrt(var + eps)
    shift = bias - mean * gain
    g = c.out.const(f"{node.name}/gain", gain.astype(np.float32))
    scaled = c.out.node("Mul", f"{node.name}/scale", [x.name, g], T=FLOAT)
    s = c.out.const(f"{node.name}/shift", shift.astype(np.float32))
    return c.result(node, c.out.node("AddV2", node.name, [scaled, s], T=FLOAT), x.nhwc)


def _matmul_const(c: Converter, node: onnx.NodeProto, x: Tensor, weight: np.ndarray) -> str:
    if x.nhwc or len(x.shape) != 2 or weight.ndim != 2:
        raise GraphError(
            f"{node.op_type} node '{node.name}': only a 2-D tensor times a 2-D constant is written"
        )
    k = c.out.const(f"{node.name}/weight", weight.astype(np.float32))
    return c.out.node("MatMul", node.name, [x.name, k], T=FLOAT, transpose_a=False, transpose_b=False)


def _gemm(c: Converter, node: onnx.NodeProto) -> Tensor:
    a = _attrs(node)
    if a.get("transA", 0) or node.input[1] not in c.consts:
        raise GraphError(f"Gemm node '{node.name}': transA or non-constant weights are not written")
    x = c.tensor(node.input[0])
    weight = c.consts[node.input[1]].astype(np.float64) * float(a.get("alpha", 1.0))
    weight = weight.T if a.get("transB", 0) else weight
    out = _matmul_const(c, node, x, weight)
    if len(node.input) > 2 and node.input[2]:
        bias = np.broadcast_to(c.consts[node.input[2]] * float(a.get("beta", 1.0)), (weight.shape[1],))
        b = c.out.const(f"{node.name}/bias", bias.astype(np.float32))
        out = c.out.node("BiasAdd", f"{node.name}/bias_add", [out, b], T=FLOAT, data_format="NHWC")
    return c.result(node, out, False)


def _matmul(c: Converter, node: onnx.NodeProto) -> Tensor:
    if node.input[1] not in c.consts:
        raise GraphError(f"MatMul node '{node.name}': non-constant weights are not written")
    x = c.tensor(node.input[0])
    return c.result(node, _matmul_const(c, node, x, c.consts[node.input[1]]), False)


def _softmax(c: Converter, node: onnx.NodeProto) -> Tensor:
    x = c.tensor(node.input[0])
    if x.nhwc or len(x.shape) != 2 or int(_attrs(node).get("axis", -1)) % 2 != 1:
        raise GraphError(f"Softmax node '{node.name}' over other than the last axis of a 2-D tensor")
    return c.result(node, c.out.node("Softmax", node.name, [x.name], T=FLOAT), False)


def _resize(c: Converter, node: onnx.NodeProto) -> Tensor:
    x = c.tensor(node.input[0])
    a = _attrs(node)
    mode = a.get("mode", b"nearest")
    transform = a.get("coordinate_transformation_mode", b"half_pixel")
    if mode != b"linear" or transform not in (b"half_pixel", b"pytorch_half_pixel") or not x.nhwc:
        raise GraphError(f"Resize node '{node.name}' ({mode!r}, {transform!r}): only bilinear half-pixel")
    _, _, h, w = c.shape(node.output[0])
    if h == 1 or w == 1:
        raise GraphError(f"Resize node '{node.name}' to a size of 1 (pytorch_half_pixel differs there)")
    size = c.out.const(f"{node.name}/size", np.array([h, w], dtype=np.int32))
    out = c.out.node(
        "ResizeBilinear", node.name, [x.name, size], T=FLOAT, align_corners=False, half_pixel_centers=True
    )
    return c.result(node, out, True)


WRITERS: dict[str, Callable[[Converter, onnx.NodeProto], Tensor]] = {
    "Add": _binary,
    "Sub": _binary,
    "Mul": _binary,
    "Div": _binary,
    "Relu": _unary("Relu"),
    "Sigmoid": _unary("Sigmoid"),
    "Sqrt": _unary("Sqrt"),
    "Erf": _unary("Erf"),
    "Conv": _conv,
    "Pad": _pad_node,
    "MaxPool": _pool("MaxPool"),
    "AveragePool": _pool("AvgPool"),
    "GlobalAveragePool": _global_average_pool,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Concat": _concat,
    "BatchNormalization": _batch_norm,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Softmax": _softmax,
    "Resize": _resize,
}


def onnx_to_graphdef(model: onnx.ModelProto):
    """The frozen GraphDef of a one-input, one-output ONNX graph (digiKam's `1x3x299x299 -> 1x3` contract)."""
    return Converter(model).run()


def graph_ops(graph) -> dict[str, int]:
    """TF op -> count: what the written file asks of OpenCV's importer."""
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op] = counts.get(node.op, 0) + 1
    return counts
