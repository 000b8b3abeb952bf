"""Nine distortion types at five graded levels, built on OpenCV with explicit parameters.

Every function is deterministic for a given input and generator (the generator only picks
things like the motion direction or the noise field). Levels 1..5 follow the practice of
TID2013 / KADID-10k: level 1 is just visible on a 300 px image, level 5 ruins it.
`perceived` is the degradation a rater would feel at each level (0 = none, 1 = worst);
it drives the latent quality in `scoring.py`, so the order within a type is what matters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from iqs.core.registry import Registry

LEVELS = (1, 2, 3, 4, 5)
HIGH_QUALITY = 95  # JPEG quality for every file whose distortion is not JPEG itself


@dataclass(frozen=True)
class Distortion:
    name: str
    params: tuple[float, ...]  # the strength parameter at levels 1..5
    perceived: tuple[float, ...]  # degradation in [0, 1] at levels 1..5, increasing
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    jpeg_quality: Callable[[float], int] = lambda _p: HIGH_QUALITY
    # which SPAQ attribute the distortion mainly hurts (see scoring.SPAQ_ATTRIBUTES)
    attribute: str = "Sharpness"

    def __call__(self, rgb: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
        return self.apply(rgb, self.params[level - 1], rng)

    def quality(self, level: int) -> int:
        return self.jpeg_quality(self.params[level - 1]) if level else HIGH_QUALITY

    def degradation(self, level: int) -> float:
        return self.perceived[level - 1] if level else 0.0


DISTORTIONS: Registry[Distortion] = Registry("distortion")


def _register(d: Distortion) -> None:
    if not (len(d.params) == len(d.perceived) == len(LEVELS)):
        raise ValueError(f"distortion '{d.name}' needs one parameter and one degradation per level")
    if not all(a < b for a, b in zip(d.perceived, d.perceived[1:], strict=False)):
        raise ValueError(f"distortion '{d.name}': degradation must increase with the level")
    DISTORTIONS.register(d.name)(d)


# sRGB <-> linear light, as 256-entry tables: exposure and white balance act on light, not on codes
_CODES = np.arange(256, dtype=np.float64) / 255.0
_LINEAR = np.where(_CODES <= 0.04045, _CODES / 12.92, ((_CODES + 0.055) / 1.055) ** 2.4)


def _encode_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    code = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(code * 255.0), 0, 255).astype(np.uint8)


def _gain_lut(gains: tuple[float, float, float]) -> np.ndarray:
    """(256, 1, 3) table multiplying each channel's linear light by its gain (cv2.LUT format)."""
    return np.stack([_encode_srgb(_LINEAR * g) for g in gains], axis=-1).reshape(256, 1, 3)


def gaussian_blur(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """Normalised anti-aliased line of `length` pixels through the centre of a square kernel."""
    size = length if length % 2 else length + 1
    k = np.zeros((size, size), np.float32)
    c = (size - 1) / 2
    dx = np.cos(np.deg2rad(angle_deg)) * (length - 1) / 2
    dy = np.sin(np.deg2rad(angle_deg)) * (length - 1) / 2
    shift = 4  # sub-pixel end points (cv2.line takes fixed-point coordinates)
    p0 = (round((c - dx) * 2**shift), round((c - dy) * 2**shift))
    p1 = (round((c + dx) * 2**shift), round((c + dy) * 2**shift))
    cv2.line(k, p0, p1, 1.0, thickness=1, lineType=cv2.LINE_AA, shift=shift)
    return k / k.sum()


def motion_blur(rgb: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    kernel = motion_kernel(int(length), float(rng.uniform(0.0, 180.0)))
    return cv2.filter2D(rgb, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def gaussian_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0.0, sigma, size=rgb.shape).astype(np.float32)
    return np.clip(np.rint(rgb.astype(np.float32) + noise), 0, 255).astype(np.uint8)


def identity(rgb: np.ndarray, _param: float, _rng: np.random.Generator) -> np.ndarray:
    """JPEG's damage is done by the encoder when the file is written at the level's quality."""
    return rgb


def exposure(rgb: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    return cv2.LUT(rgb, _gain_lut((gain, gain, gain)))


def low_contrast(rgb: np.ndarray, keep: float, rng: np.random.Generator) -> np.ndarray:
    """Blend towards the image's mean grey: `keep` is the fraction of contrast left."""
    mean = np.full_like(rgb, int(round(float(rgb.mean()))))
    return cv2.addWeighted(rgb, keep, mean, 1.0 - keep, 0.0)


# white-balance errors seen in practice: tungsten (warm), shade (cool), fluorescent (green), magenta
_CASTS = ((1.0, 0.0, -1.0), (-1.0, 0.0, 1.0), (-0.5, 1.0, -0.5), (0.5, -1.0, 0.5))


def colour_cast(rgb: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    direction = _CASTS[int(rng.integers(len(_CASTS)))]
    gains = tuple(float(np.exp(strength * d)) for d in direction)
    return cv2.LUT(rgb, _gain_lut(gains))  # type: ignore[arg-type]


def down_up(rgb: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Downscale by `factor` (area averaging, like a thumbnail) and upscale back with bicubic."""
    h, w = rgb.shape[:2]
    small = cv2.resize(
        rgb, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


# name, strength parameter at levels 1..5, perceived degradation at levels 1..5, function, SPAQ attribute
# fmt: off
_TABLE = (
    ("gaussian_blur", (0.8, 1.4, 2.2, 3.3, 5.0), (0.18, 0.36, 0.55, 0.74, 0.92), gaussian_blur, "Sharpness"),
    ("motion_blur", (5, 9, 14, 21, 31), (0.18, 0.36, 0.56, 0.75, 0.92), motion_blur, "Sharpness"),
    ("noise", (5.0, 10.0, 17.0, 27.0, 42.0), (0.16, 0.34, 0.54, 0.73, 0.9), gaussian_noise, "Noisiness"),
    ("jpeg", (40, 22, 13, 8, 4), (0.15, 0.33, 0.52, 0.72, 0.9), identity, "Noisiness"),
    ("under_exposure", (0.55, 0.36, 0.22, 0.13, 0.07), (0.17, 0.35, 0.55, 0.74, 0.9), exposure, "Brightness"),
    ("over_exposure", (1.7, 2.6, 3.8, 5.5, 8.0), (0.17, 0.36, 0.56, 0.75, 0.92), exposure, "Brightness"),
    ("low_contrast", (0.72, 0.52, 0.36, 0.24, 0.14), (0.15, 0.33, 0.52, 0.7, 0.88), low_contrast, "Contrast"),
    ("colour_cast", (0.12, 0.24, 0.38, 0.55, 0.78), (0.14, 0.31, 0.5, 0.68, 0.86), colour_cast, "Colorfulness"),
    ("down_up", (1.8, 2.6, 3.6, 5.0, 7.0), (0.15, 0.33, 0.52, 0.71, 0.89), down_up, "Sharpness"),
)
# fmt: on
# JPEG's level parameter is the encoder quality itself; every other type is saved at HIGH_QUALITY
_JPEG_QUALITY: dict[str, Callable[[float], int]] = {"jpeg": lambda q: int(q)}
for _name, _params, _perceived, _apply, _attribute in _TABLE:
    _register(
        Distortion(
            _name,
            _params,
            _perceived,
            _apply,
            jpeg_quality=_JPEG_QUALITY.get(_name, lambda _p: HIGH_QUALITY),
            attribute=_attribute,
        )
    )
