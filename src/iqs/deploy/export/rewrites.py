"""Export-only rewrites: a copy of the model whose traced graph uses operators every digiKam OpenCV reads.

Training never sees these modules; `export_copy` deep-copies the model, rewrites the copy and checks that it
still computes what the original computes.

- **Static TF-"SAME" padding.** timm's `Conv2dSame` / `MaxPool2dSame` / `AvgPool2dSame` compute their pads
  from the input's shape at run time, which traces to `Shape -> Div -> Ceil -> ... -> Pad`. OpenCV 4.6-4.12
  have no ONNX `Ceil`. The exported graph's input is always digiKam's 299x299, resized inside the graph to the
  backbone's fixed `input_size`, so every layer's input size is known at export: the pads become constants
  (timm's own `pad_same_arg`), folded into the convolution when they are symmetric, else a constant `Pad`.
- **Spatial means as `GlobalAveragePool`** (on the traced ONNX graph). `x.mean((2, 3))` (MLSP pooling,
  timm's squeeze-excitation) traces to `ReduceMean`, which OpenCV 4.8.0 computes wrongly on many map sizes
  (off by up to 0.1 on 24x75x75 or 96x112x112 maps); its `GlobalAveragePool` is right, and for a 4-D input
  the two are the same operation (with `keepdims=0`, followed by a `Flatten`).
- **No `Identity` of a constant** (on the ONNX graph). The exporter aliases duplicate weights (e.g. equal
  folded BN biases) through `Identity` nodes on initializers, which OpenCV 4.6 cannot import ("inputs.size()");
  each becomes an initializer of its own under the output's name.
- **ReLU6 without `Clip`.** `nn.ReLU6` traces to `Clip(x, min, max)` with the bounds as inputs (opset >= 11
  has no bound attributes); OpenCV 4.6's importer accepts only the attribute form. `relu(x) - relu(x - 6)`
  uses `Relu` and `Sub` only. It is exact for x <= 12 (x - 6 is then exact, Sterbenz), and above that it is
  6 up to half an ulp of x.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import onnx
import torch
import torch.nn.functional as F
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.padding import pad_same_arg
from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame
from torch import nn

DYNAMIC_SAME = (Conv2dSame, MaxPool2dSame, AvgPool2dSame)
# float32 tolerance of the rewritten copy against the original (the ReLU6 rewrite rounds above x = 12)
REWRITE_ATOL = 1e-5


class ReLU6AsRelu(nn.Module):
    """min(max(x, 0), 6) as relu(x) - relu(x - 6): Relu and Sub, which every OpenCV DNN importer reads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) - F.relu(x - 6.0)


class StaticPad(nn.Module):
    """A constant pad (left, right, top, bottom) computed once for a known input size."""

    def __init__(self, pads: Sequence[int], value: float = 0.0) -> None:
        super().__init__()
        self.pads = tuple(int(p) for p in pads)
        self.value = float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads, value=self.value)

    def extra_repr(self) -> str:
        return f"pads={self.pads}, value={self.value}"


def _static_conv(conv: Conv2dSame, pads: list[int]) -> nn.Module:
    left, right, top, bottom = pads
    symmetric = left == right and top == bottom
    fixed = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        (top, left) if symmetric else 0,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
    )
    fixed.weight = conv.weight
    if conv.bias is not None:
        fixed.bias = conv.bias
    return fixed if symmetric else nn.Sequential(StaticPad(pads), fixed)


def _static_pool(pool: MaxPool2dSame | AvgPool2dSame, pads: list[int]) -> nn.Module:
    if isinstance(pool, MaxPool2dSame):
        # TF pads max pooling with -inf, so a border never wins
        fixed = nn.MaxPool2d(pool.kernel_size, pool.stride, 0, pool.dilation, pool.ceil_mode)
        return nn.Sequential(StaticPad(pads, value=-float("inf")), fixed)
    fixed = nn.AvgPool2d(pool.kernel_size, pool.stride, 0, pool.ceil_mode, pool.count_include_pad)
    return nn.Sequential(StaticPad(pads), fixed)


def _input_sizes(model: nn.Module, example: torch.Tensor, kinds: tuple[type, ...]) -> dict[str, list[int]]:
    """Spatial input size (H, W) of every module of `kinds` when `model` runs on `example`."""
    sizes: dict[str, list[int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, kinds):

            def record(mod: nn.Module, args: tuple, name: str = name) -> None:
                sizes[name] = [int(s) for s in args[0].shape[-2:]]

            hooks.append(module.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def freeze_same_padding(model: nn.Module, example: torch.Tensor) -> int:
    """Replace, in place, every dynamic-"SAME" layer by its constant-pad equivalent for `example`'s size.

    Returns how many layers were replaced. A layer that `example` does not reach (e.g. past timm's
    `stop_early`) is not traced either, and keeps its dynamic form.
    """
    sizes = _input_sizes(model, example, DYNAMIC_SAME)
    for name, size in sizes.items():
        layer = model.get_submodule(name)
        if isinstance(layer, Conv2dSame):
            pads = pad_same_arg(size, list(layer.kernel_size), list(layer.stride), list(layer.dilation))
            _set_module(model, name, _static_conv(layer, pads))
        else:
            dilation = list(getattr(layer, "dilation", (1, 1)))
            dilation = dilation if len(dilation) == 2 else dilation * 2
            pads = pad_same_arg(size, list(layer.kernel_size), list(layer.stride), dilation)
            _set_module(model, name, _static_pool(layer, pads))
    return len(sizes)


def replace_relu6(model: nn.Module) -> int:
    """Replace, in place, every `nn.ReLU6` module by `ReLU6AsRelu`; returns how many."""
    names = [name for name, module in model.named_modules() if type(module) is nn.ReLU6]
    for name in names:
        _set_module(model, name, ReLU6AsRelu())
    return len(names)


def export_copy(graph: nn.Module, example: torch.Tensor, atol: float = REWRITE_ATOL) -> nn.Module:
    """A rewritten deep copy of `graph` (static pads, ReLU6 without Clip), checked against `graph` on `example`.

    `example` must have the exported input's shape: the pads are computed for it.
    """
    fixed = copy.deepcopy(graph).eval()
    freeze_same_padding(fixed, example)
    replace_relu6(fixed)
    with torch.no_grad():
        want, got = graph(example), fixed(example)
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    for a, b in zip(want, got, strict=True):
        worst = float((a - b).abs().max())
        if worst > atol:
            raise RuntimeError(f"export rewrite changed the model's output by {worst:.2e} > {atol:.0e}")
    return fixed


def spatial_means_as_pools(model: onnx.ModelProto) -> int:
    """Rewrite, in place, every `ReduceMean` over axes (2, 3) of a 4-D tensor as `GlobalAveragePool`.

    Returns how many. Ranks come from ONNX shape inference; a node whose input rank is unknown is left alone
    (the graph check then names it).
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        if v.type.tensor_type.HasField("shape")
    }
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        rank = ranks.get(node.input[0]) if node.input else None
        axes = sorted(a % 4 for a in attrs.get("axes", [])) if rank == 4 else None
        if node.op_type != "ReduceMean" or len(node.input) != 1 or axes != [2, 3]:
            nodes.append(node)
            continue
        count += 1
        if attrs.get("keepdims", 1):
            nodes.append(
                onnx.helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), node.name)
            )
            continue
        pooled = f"{node.output[0]}__pooled"
        nodes.append(onnx.helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], node.name))
        nodes.append(
            onnx.helper.make_node("Flatten", [pooled], list(node.output), f"{node.name}__flatten", axis=1)
        )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def fold_constant_identities(model: onnx.ModelProto) -> int:
    """Replace, in place, every `Identity` whose input is an initializer by a copy of that initializer."""
    inits = {init.name: init for init in model.graph.initializer}
    keep: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy_ = onnx.TensorProto()
            copy_.CopyFrom(inits[node.input[0]])
            copy_.name = node.output[0]
            model.graph.initializer.append(copy_)
            count += 1
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return count


def rewrite_graph(model: onnx.ModelProto) -> dict[str, int]:
    """Every ONNX-level rewrite above, in place; returns how many nodes each changed."""
    return {
        "spatial_means_as_pools": spatial_means_as_pools(model),
        "fold_constant_identities": fold_constant_identities(model),
    }
