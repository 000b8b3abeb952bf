"""Which ONNX operators every digiKam OpenCV runs, declared once as data, and the export-time graph check.

Everything here is measured, not assumed: `PORTABLE` lists the operators of graphs that load in every release
of `OPENCV_RELEASES` and agree with onnxruntime there (`make compat ARGS=--backbones`; tests/test_opencv_matrix.py
exports the demo config and runs the matrix), and for every `GAPS` entry a small probe graph runs in every
release (tests/test_opencv_matrix.py) to confirm exactly which releases fail it. Two gaps that no operator
name captures are avoided in the model code instead: 1-D element-wise ops (4.6) and a 2-D x 1-D `MatMul`
(5.0); see `score_to_class_logits` and `expectation` in iqs.models.heads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import onnx

# The OpenCV releases digiKam 8.x links (../shared/digikam.md), as pip `opencv-python-headless` versions:
# 4.6 Debian 12 / Ubuntu 24.04, 4.8, 4.10 Debian 13 / Fedora, 4.12 rolling, and the newest 5.x.
OPENCV_RELEASES = ("4.6.0.66", "4.8.0.76", "4.10.0.84", "4.12.0.88", "5.0.0.93")


def release_name(pip_version: str) -> str:
    """`4.6.0.66` (pip) -> `4.6.0` (OpenCV's own version; pip's fourth number is the wheel build)."""
    return ".".join(pip_version.split(".")[:3])


# Operators of exported graphs that load and agree with onnxruntime in every release above.
PORTABLE = frozenset(
    {
        "Add",
        "AveragePool",
        "BatchNormalization",
        "Cast",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "Div",
        "Erf",
        "Flatten",
        "Gemm",
        "GlobalAveragePool",
        "MatMul",
        "MaxPool",
        "Mul",
        "Pad",
        "Relu",
        "Reshape",
        "Resize",
        "Shape",
        "Sigmoid",
        "Slice",
        "Softmax",
        "Sqrt",
        "Sub",
        "Transpose",
    }
)


def _has_inputs(count: int) -> Callable[[onnx.NodeProto], bool]:
    return lambda node: len([name for name in node.input if name]) >= count


@dataclass(frozen=True)
class Gap:
    """An operator (or one form of it, when `form` is given) that the releases in `lacking` cannot run."""

    op: str
    lacking: tuple[str, ...]  # pip versions, as in OPENCV_RELEASES
    problem: str
    fix: str
    form: Callable[[onnx.NodeProto], bool] | None = None

    def matches(self, node: onnx.NodeProto) -> bool:
        return node.op_type == self.op and (self.form is None or self.form(node))


GAPS = (
    Gap(
        "Ceil",
        ("4.6.0.66", "4.8.0.76", "4.10.0.84", "4.12.0.88"),
        "the Ceil of timm's dynamic SAME padding (shape arithmetic) does not import",
        "dynamic TF-'SAME' padding makes it; export_rewrites.freeze_same_padding fixes timm's layers",
    ),
    Gap(
        "Clip",
        ("4.6.0.66",),
        "parseClip reads only the min/max attributes of opset < 11, not Clip's min/max inputs",
        "ReLU6 makes it; export_rewrites.replace_relu6 writes relu(x) - relu(x - 6)",
        form=_has_inputs(2),
    ),
    Gap(
        "Squeeze",
        ("4.6.0.66",),
        "parseSqueeze reads only the axes attribute of opset < 13, not the axes input",
        "use reshape instead of squeeze in the model",
        form=_has_inputs(2),
    ),
    Gap(
        "ReduceMean",
        ("4.8.0.76",),
        "loads, but 4.8.0 averages many map sizes wrongly (a mean over H, W of 24x75x75 is off by 0.1)",
        "export_rewrites.spatial_means_as_pools turns means over H, W of 4-D maps into GlobalAveragePool",
    ),
    Gap(
        "LayerNormalization",
        ("4.6.0.66",),
        "no ONNX importer for LayerNormalization (parse error in 4.6)",
        "none in the export: a backbone with layer norm (ConvNeXt, ViTs) cannot serve digiKam on OpenCV 4.6",
    ),
)


def graph_ops(model: onnx.ModelProto) -> Counter[str]:
    """Operator type -> count over the graph (subgraphs of If/Loop included)."""
    counts: Counter[str] = Counter()
    for node in _nodes(model.graph.node):
        counts[node.op_type] += 1
    return counts


def _nodes(nodes: Iterable[onnx.NodeProto]) -> Iterable[onnx.NodeProto]:
    for node in nodes:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g.node)
            for graph in attr.graphs:
                yield from _nodes(graph.node)


def problems(model: onnx.ModelProto, releases: Iterable[str] = OPENCV_RELEASES) -> list[str]:
    """One line per operator that some release in `releases` cannot run; empty when the graph is portable."""
    wanted = list(releases)
    lines: list[str] = []
    seen: set[str] = set()
    for node in _nodes(model.graph.node):
        gap = next((g for g in GAPS if g.matches(node)), None)
        if gap is not None:
            lacking = [r for r in gap.lacking if r in wanted]
            key = f"gap:{gap.op}"
            if lacking and key not in seen:
                seen.add(key)
                names = ", ".join(f"OpenCV {release_name(r)}" for r in lacking)
                lines.append(
                    f"{node.op_type} (e.g. node '{node.name}'): {names}: {gap.problem}. Fix: {gap.fix}"
                )
        elif node.op_type not in PORTABLE and node.op_type not in seen:
            seen.add(node.op_type)
            lines.append(
                f"{node.op_type} (e.g. node '{node.name}'): not in the tested set; no OpenCV release of "
                f"{', '.join(release_name(r) for r in wanted)} is known to run it (add it to "
                "iqs.deploy.export.onnx_ops.PORTABLE only after `make compat` passes with it)"
            )
    return lines
