"""The one definition of how a photo becomes model input, shared by export, predict and the parity proof.

digiKam's aesthetic detector (core/libs/imgqsort/detectors/aesthetic_detector.cpp) prepares an 8-bit BGR
preview like this: BGR->RGB, a plain 299x299 `INTER_NEAREST_EXACT` stretch (no aspect ratio kept, no crop),
`x / 127.5 - 1`, then `blobFromImage` to NCHW. Every exported graph takes exactly these pixels; moving them to
the backbone's own resolution and normalisation happens inside the graph (`DigikamToBackbone`), so digiKam,
`iqs predict` and the PyTorch reference all see the same input.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DIGIKAM_SIZE = 299
DIGIKAM_INPUT_SHAPE = (1, 3, DIGIKAM_SIZE, DIGIKAM_SIZE)
# digiKam computes x / 127.5 - 1 as `mul(1.0F / 127.5F)` then `subtract(1)` in float32; a true division by 127.5
# differs from that product in the last bit for many pixel values (tests/test_opencv_matrix.py checks equality)
DIGIKAM_SCALE = np.float32(1.0) / np.float32(127.5)


def _scale(stretched: np.ndarray) -> np.ndarray:
    return stretched.astype(np.float32) * DIGIKAM_SCALE - np.float32(1.0)


def digikam_blob(bgr_image: np.ndarray) -> np.ndarray:
    """digiKam's preprocessing, step by step: uint8 BGR (H, W, 3) -> float32 blob (1, 3, 299, 299) in [-1, 1]."""
    if bgr_image.ndim != 3 or bgr_image.shape[2] != 3 or bgr_image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit BGR image (H, W, 3), got {bgr_image.dtype} {bgr_image.shape}")
    rgb = cv2.cvtColor(bgr_image, cv2.COLOR_BGR2RGB)
    stretched = cv2.resize(rgb, (DIGIKAM_SIZE, DIGIKAM_SIZE), interpolation=cv2.INTER_NEAREST_EXACT)
    scaled = _scale(stretched)
    return cv2.dnn.blobFromImage(
        scaled, scalefactor=1.0, size=(DIGIKAM_SIZE, DIGIKAM_SIZE), mean=(0, 0, 0), swapRB=False, crop=False
    )


def digikam_chw(rgb_image: np.ndarray) -> np.ndarray:
    """The same pixels as `digikam_blob` from an RGB image, as (3, 299, 299) float32 ready for batching.

    Nearest-neighbour resizing acts on each channel alone, so resizing RGB directly equals digiKam's
    convert-then-resize; the parity test checks this equality on real photos.
    """
    if rgb_image.ndim != 3 or rgb_image.shape[2] != 3 or rgb_image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit RGB image (H, W, 3), got {rgb_image.dtype} {rgb_image.shape}")
    stretched = cv2.resize(rgb_image, (DIGIKAM_SIZE, DIGIKAM_SIZE), interpolation=cv2.INTER_NEAREST_EXACT)
    scaled = _scale(stretched)
    return np.ascontiguousarray(scaled.transpose(2, 0, 1))


class DigikamToBackbone(nn.Module):
    """[-1, 1] RGB at 299x299 -> the backbone's resolution and mean/std, as graph operators.

    Bilinear without antialiasing, because OpenCV's DNN importer and opset-17 `Resize` have no antialias
    mode; downscaling 299 -> 224 is mild enough for bilinear. The renormalisation is one per-channel affine
    map: ((x + 1) / 2 - mean) / std = x * 0.5 / std + (0.5 - mean) / std.
    """

    def __init__(self, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        mean_t = torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1)
        std_t = torch.tensor([float(s) for s in std]).view(1, 3, 1, 1)
        self.register_buffer("gain", 0.5 / std_t)
        self.register_buffer("offset", (0.5 - mean_t) / std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # inputs are always digiKam's 299x299; a static branch keeps tracing free of shape checks
        if self.input_size != (DIGIKAM_SIZE, DIGIKAM_SIZE):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=False)
        return x * self.gain + self.offset

    @classmethod
    def from_meta(cls, meta: dict) -> DigikamToBackbone:
        return cls(meta["input_size"], meta["mean"], meta["std"])
