"""The one preprocessing definition: image decoding and the albumentations pipelines.

Train, eval, the feature cache, export and predict all build their pipelines from an `InputSpec`
(input size, mean/std, interpolation), which comes from the backbone's timm data config and is
stored in the checkpoint's `iqs_meta`, so a model never sees pixels prepared two ways.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

# timm names its interpolations like PIL; albumentations takes OpenCV flags
INTERPOLATIONS: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


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
    def from_timm(cls, data_config: Mapping[str, Any], size: Sequence[int] | int | None = None) -> InputSpec:
        """From `timm.data.resolve_model_data_config(model)`; `size` overrides the pretrained size."""
        hw = data_config["input_size"][-2:] if size is None else size
        if isinstance(hw, int):
            hw = (hw, hw)
        return cls(
            size=(int(hw[0]), int(hw[1])),
            mean=tuple(float(v) for v in data_config["mean"]),
            std=tuple(float(v) for v in data_config["std"]),
            interpolation=str(data_config.get("interpolation", "bicubic")),
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


def read_rgb(path: str) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (H, W, 3); the error names the file."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"{path}: cannot decode the image (missing, truncated or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _to_tensor(spec: InputSpec) -> list:
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    return [A.Normalize(mean=spec.mean, std=spec.std, max_pixel_value=255.0), ToTensorV2()]


# digiKam's view of a photo (../shared/digikam.md): a plain 299x299 stretch with INTER_NEAREST_EXACT
DIGIKAM_SIZE = 299
# part of the feature-cache key: change it whenever eval_transform changes what it computes
EVAL_RECIPE = "stretch299-nearest_exact/normalize/bilinear-to-input"


def eval_transform(spec: InputSpec):
    """Deterministic, and exactly what the exported model sees inside digiKam: the whole photo stretched to
    299x299 with INTER_NEAREST_EXACT (no crop: composition is part of its quality), normalised, then a
    bilinear resize to the backbone's size, as `iqs.deploy.preprocess.DigikamToBackbone` does in the graph.
    Normalising before the float resize keeps the pixels bit-for-bit the graph's up to float rounding."""
    import albumentations as A

    h, w = spec.size
    ops = [
        A.Resize(DIGIKAM_SIZE, DIGIKAM_SIZE, interpolation=cv2.INTER_NEAREST_EXACT),
        A.Normalize(mean=spec.mean, std=spec.std, max_pixel_value=255.0),
    ]
    if (h, w) != (DIGIKAM_SIZE, DIGIKAM_SIZE):
        ops.append(A.Resize(h, w, interpolation=cv2.INTER_LINEAR))
    from albumentations.pytorch import ToTensorV2

    return A.Compose([*ops, ToTensorV2()])


def train_transform(
    spec: InputSpec, crop_scale: Sequence[float] = (0.6, 1.0), hflip: float = 0.5, seed: int | None = None
):
    """RandomResizedCrop (mild scale range: heavy crops change an aesthetic score) + horizontal flip.

    No colour or blur augmentation: those change the very quality the labels describe.
    """
    import albumentations as A

    h, w = spec.size
    ops = [
        A.RandomResizedCrop(
            size=(h, w), scale=tuple(crop_scale), interpolation=INTERPOLATIONS[spec.interpolation]
        ),
        A.HorizontalFlip(p=hflip),
        *_to_tensor(spec),
    ]
    return A.Compose(ops, seed=seed)
