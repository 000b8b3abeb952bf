"""How a backbone's feature maps become one feature vector per image.

Pooling (`pool`):
- `avg`: timm's own head pooling of the last feature map (global average for most models).
- `mlsp`: multi-level spatial pooling (Hosu et al., "Effective aesthetics prediction with multi-level spatially
  pooled features", CVPR 2019): global average and spatial standard deviation of every stage output that timm
  lists in `feature_info`. Low-level stages see blur, noise and compression artefacts that the last, semantic
  stage has largely discarded; the standard deviation adds the spatial contrast of each channel.
- `mlsp_blocks`: the same statistics of every block group (timm's `extra_blocks=True`), a finer hierarchy.

`pool_levels: k` keeps the first k levels of an MLSP pool. The shallow levels respond to the distortion
(noise, blur, blocking, exposure) rather than to the scene, so with few training photos they generalise
to new content better than the semantic deep levels, and the forward pass can stop early.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

POOLINGS = ("avg", "mlsp", "mlsp_blocks")
STD_EPS = 1e-6


def check_pool(pool: str) -> str:
    if pool not in POOLINGS:
        hint = difflib.get_close_matches(str(pool), POOLINGS, n=1)
        did_you_mean = f" Did you mean '{hint[0]}'?" if hint else ""
        raise ValueError(f"unknown backbone pool '{pool}'.{did_you_mean} Known: {', '.join(POOLINGS)}")
    return pool


def mean_std_pool(x: torch.Tensor, eps: float = STD_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) -> per-channel spatial mean and standard deviation, each (N, C).

    Written as sqrt(relu(E[x^2] - E[x]^2) + eps) rather than `torch.std`: it exports to plain
    ReduceMean/Mul/Sub/Relu/Sqrt ONNX ops that OpenCV's DNN importer reads, the relu absorbs the small
    negative values that cancellation leaves for near-constant channels, and eps keeps the gradient finite.
    """
    mean = x.mean(dim=(2, 3))
    mean_sq = (x * x).mean(dim=(2, 3))
    std = torch.sqrt(torch.relu(mean_sq - mean * mean) + eps)
    return mean, std


def check_levels(levels: int | None) -> int | None:
    if levels is not None and (isinstance(levels, bool) or int(levels) != levels or int(levels) < 1):
        raise ValueError(f"pool_levels must be null (every level) or a positive integer, got {levels!r}")
    return None if levels is None else int(levels)


def pool_intermediates(
    body: nn.Module, x: torch.Tensor, pool: str, levels: int | None = None
) -> list[torch.Tensor]:
    """The feature maps an MLSP `pool` summarises: the first `levels` levels (None = all), shallow first.

    timm stops the forward pass after the last level taken, so a shallow pool is also a cheaper one.
    """
    extra = pool == "mlsp_blocks"
    if levels is None:
        return body.forward_intermediates(x, intermediates_only=True, extra_blocks=extra)
    # a list, not an int: timm reads an int n as "the last n levels"
    return body.forward_intermediates(
        x, indices=list(range(levels)), intermediates_only=True, stop_early=True, extra_blocks=extra
    )


def level_channels(body: nn.Module, pool: str, levels: int | None = None) -> list[int]:
    """Channels of the feature maps that `pool` summarises (one entry for `avg`: the final features)."""
    if pool == "avg":
        return [int(body.num_features)]
    if not hasattr(body, "forward_intermediates"):
        raise ValueError(
            f"pool '{pool}' needs a timm model with forward_intermediates, not {type(body).__name__}"
        )
    # A probe is the one way that holds for every architecture (feature_info omits the extra blocks);
    # at the pretrained size, since some models (ViTs) accept no other.
    size = int(getattr(body, "pretrained_cfg", {}).get("input_size", (3, 224, 224))[-1])
    was_training = body.training
    body.eval()
    try:
        with torch.no_grad():
            maps = pool_intermediates(body, torch.zeros(1, 3, size, size), pool)
    finally:
        body.train(was_training)
    if levels is not None and levels > len(maps):
        raise ValueError(
            f"pool_levels={levels}, but pool '{pool}' of {type(body).__name__} has {len(maps)} levels"
        )
    return [int(m.shape[1]) for m in maps[:levels]]


def pooled_num_features(body: nn.Module, pool: str, levels: int | None = None) -> int:
    channels = level_channels(body, check_pool(pool), check_levels(levels))
    return channels[0] if pool == "avg" else 2 * sum(channels)
