"""How a photo becomes model input: the one definition, shared by training, evaluation, the feature cache,
export, `iqs predict` and the parity proofs. Photos are decoded by `iqs.core.decode.load_rgb` only.

digiKam's aesthetic detector (core/libs/imgqsort/detectors/aesthetic_detector.cpp) prepares an 8-bit BGR
preview like this: BGR->RGB, a plain 299x299 `INTER_NEAREST_EXACT` stretch (no aspect ratio kept, no crop),
`x / 127.5 - 1`, then `blobFromImage` to NCHW. Every exported graph takes exactly these pixels; moving them to
the backbone's own resolution and normalisation happens inside the graph (`DigikamToBackbone`), so digiKam,
`iqs predict` and the PyTorch reference all see the same input.

Training and evaluation build the same thing from an `InputSpec` (the backbone's input size and mean/std,
stored in the checkpoint's `iqs_meta`): `eval_transform` is digiKam's view followed by `DigikamToBackbone`,
and `train_transform` is the same with mild augmentation applied to the photo *before* digiKam's stretch:
a crop of a few percent from each border and a horizontal flip. The model is thus trained on digiKam's exact
view of a slightly reframed or mirrored photo: the nearest-neighbour aliasing and the aspect stretch it is
judged and deployed on stay as they are (no rescaling interpolation, no colour or blur changes, which would
alter the very quality the labels describe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DIGIKAM_SIZE = 299
DIGIKAM_INPUT_SHAPE = (1, 3, DIGIKAM_SIZE, DIGIKAM_SIZE)
# part of the feature-cache key: change it whenever eval_transform changes what it computes
EVAL_RECIPE = "decode.load_rgb/stretch299-nearest_exact/x*(1f/127.5f)-1/graph-bilinear-affine"
# timm's names for a backbone's pretraining interpolation (recorded in iqs_meta; the graph always uses bilinear)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos")


@dataclass(frozen=True)
class InputSpec:
    """What the network expects at its input: (H, W), per-channel mean/std on [0, 1] pixels."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation '{self.interpolation}'; known: {', '.join(sorted(INTERPOLATIONS))}"
            )

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> InputSpec:
        """From a checkpoint's `iqs_meta` record (input_size, mean, std[, interpolation])."""
        return cls(
            size=(int(meta["input_size"][0]), int(meta["input_size"][1])),
            mean=tuple(float(v) for v in meta["mean"]),
            std=tuple(float(v) for v in meta["std"]),
            interpolation=str(meta.get("interpolation", "bicubic")),
        )

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


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


class PhotoToInput:
    """uint8 RGB photo -> the backbone's input tensor (3, H, W), as `transform(image=rgb)["image"]`.

    [augmentation of the photo] -> digiKam's view (`digikam_chw`) -> `DigikamToBackbone`, the very module
    the exported graph runs. With no augmentation this is `eval_transform`, bit for bit.
    """

    def __init__(
        self, spec: InputSpec, crop: float = 0.0, hflip: float = 0.0, seed: int | None = None
    ) -> None:
        import albumentations as A

        if not 0.0 <= float(crop) < 0.5 or not 0.0 <= float(hflip) <= 1.0:
            raise ValueError(
                f"augment.crop must be in [0, 0.5) and augment.hflip in [0, 1]; got {crop}, {hflip}"
            )
        ops: list[Any] = []
        if crop > 0:
            # up to `crop` of the width/height cut from each border, drawn independently: a mild reframing
            ops.append(A.RandomCropFromBorders(crop, crop, crop, crop, p=1.0))
        if hflip > 0:
            ops.append(A.HorizontalFlip(p=float(hflip)))
        self.spec = spec
        self.augment = A.Compose(ops, seed=seed) if ops else None
        self.to_backbone = DigikamToBackbone(spec.size, spec.mean, spec.std).eval()

    def set_random_seed(self, seed: int) -> None:
        if self.augment is not None:
            self.augment.set_random_seed(seed)

    def __call__(self, *, image: np.ndarray) -> dict[str, torch.Tensor]:
        if self.augment is not None:
            image = self.augment(image=image)["image"]
        view = torch.from_numpy(digikam_chw(np.ascontiguousarray(image)))
        with torch.no_grad():
            return {"image": self.to_backbone(view[None])[0]}


def eval_transform(spec: InputSpec) -> PhotoToInput:
    """Deterministic: exactly what the exported model sees inside digiKam (the whole photo, no crop:
    composition is part of its quality)."""
    return PhotoToInput(spec)


def train_transform(
    spec: InputSpec, crop: float = 0.05, hflip: float = 0.5, seed: int | None = None
) -> PhotoToInput:
    """digiKam's view of a mildly reframed (`crop`: at most this fraction cut from each border) and
    mirrored (`hflip`: probability) photo; crop=0, hflip=0 is `eval_transform`."""
    return PhotoToInput(spec, crop=crop, hflip=hflip, seed=seed)
