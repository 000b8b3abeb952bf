"""Reference photos for the demo: real photographs shipped inside installed packages, cut into crops.

Only images that load from the installed packages are used (several scikit-image samples need a
pooch download and would fail offline). Scans, drawings, microscopy and the intentionally
motion-blurred `clock` are left out: a pristine reference must be a clean natural photograph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _motorcycle() -> np.ndarray:
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]  # the right view is the same scene


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh, Image.open(fh) as im:
        return np.asarray(im.convert("RGB"))


# name -> (loader, package it ships with); each photograph is one split group, cut into crops `<name>-c<k>`
PHOTOS: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    "astronaut": (_skimage("astronaut"), "scikit-image"),
    "camera": (_skimage("camera"), "scikit-image"),
    "chelsea": (_skimage("chelsea"), "scikit-image"),  # `cat` is the same photograph
    "coffee": (_skimage("coffee"), "scikit-image"),
    "rocket": (_skimage("rocket"), "scikit-image"),
    "coins": (_skimage("coins"), "scikit-image"),
    "moon": (_skimage("moon"), "scikit-image"),
    "hubble_deep_field": (_skimage("hubble_deep_field"), "scikit-image"),
    "grass": (_skimage("grass"), "scikit-image"),
    "gravel": (_skimage("gravel"), "scikit-image"),
    "brick": (_skimage("brick"), "scikit-image"),
    "motorcycle": (_motorcycle, "scikit-image"),
    "china": (_sklearn("china.jpg"), "scikit-learn"),
    "flower": (_sklearn("flower.jpg"), "scikit-learn"),
    "grace_hopper": (_grace_hopper, "matplotlib"),
}


@dataclass(frozen=True)
class Reference:
    """One pristine crop. `photo` names the photograph it was cut from (the split group)."""

    name: str  # "<photo>-c<k>"
    photo: str
    box: tuple[int, int, int, int]  # x, y, w, h in the photograph
    rgb: np.ndarray  # uint8 (H, W, 3)


def load_photo(name: str) -> np.ndarray:
    """The photograph as uint8 RGB (grey photos are replicated to three channels)."""
    loader, _ = PHOTOS[name]
    img = np.asarray(loader())
    if img.dtype != np.uint8:
        raise TypeError(f"demo photo '{name}' is {img.dtype}, expected uint8")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


def plan_crops(
    height: int, width: int, n: int, rng: np.random.Generator, max_iou: float = 0.3
) -> list[tuple[int, int, int, int]]:
    """Up to `n` crops at different positions and scales whose pairwise IoU stays below `max_iou`.

    Scales span 45-80 % of the short side so that the crops show the scene at different
    magnifications; aspect ratios are those of real photos (4:3, 3:4, 1:1, 3:2).
    """
    boxes: list[tuple[int, int, int, int]] = []
    short = min(height, width)
    for _ in range(400):  # rejection sampling; the budget only matters for tiny photos
        if len(boxes) == n:
            break
        side = rng.uniform(0.45, 0.8) * short
        aspect = (4 / 3, 3 / 4, 1.0, 3 / 2)[rng.integers(4)]
        w = int(min(width, round(side * np.sqrt(aspect))))
        h = int(min(height, round(side / np.sqrt(aspect))))
        x = int(rng.integers(0, width - w + 1))
        y = int(rng.integers(0, height - h + 1))
        box = (x, y, w, h)
        if all(_iou(box, b) < max_iou for b in boxes):
            boxes.append(box)
    return boxes


def fit_long_side(img: np.ndarray, long_side: int) -> np.ndarray:
    """Downscale (never upscale) so the long side is at most `long_side`; INTER_AREA avoids aliasing."""
    h, w = img.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def make_references(
    seed: int, crops_per_photo: int, long_side: int, photos: list[str] | None = None
) -> list[Reference]:
    refs: list[Reference] = []
    for i, photo in enumerate(photos or list(PHOTOS)):
        img = load_photo(photo)
        rng = np.random.default_rng([seed, 1, i])
        for k, (x, y, w, h) in enumerate(plan_crops(img.shape[0], img.shape[1], crops_per_photo, rng)):
            crop = fit_long_side(img[y : y + h, x : x + w], long_side)
            refs.append(Reference(f"{photo}-c{k}", photo, (x, y, w, h), np.ascontiguousarray(crop)))
    return refs
