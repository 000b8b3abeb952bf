"""Photo files -> 8-bit RGB arrays at a reduced size, for prediction.

JPEGs (and the JPEG previews embedded in camera RAW files) are decoded with libjpeg-turbo's DCT scaling
straight to the smallest size whose both sides stay >= `min_side`: a 24 MP photo costs a fraction of a full
decode and the model never needed more. Other formats decode in full through Pillow (pillow-heif for
HEIC/HEIF). EXIF orientation is applied, as digiKam does for its previews.

Valid photos in unusual pixel formats are converted and scored: CMYK (Pillow's conversion), 16-bit (scaled
to 8 bits), grayscale (replicated), alpha (dropped, as digiKam's BGRA->BGR conversion does). Files that are
empty, not images, corrupt, truncated or above the pixel limit raise `DecodeError` with the file named.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from iqs.core.preprocess import DIGIKAM_SIZE

try:  # registers HEIC/HEIF with Pillow; without it those files become "unsupported" error rows
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a project dependency
    pass

RAW_EXTENSIONS = frozenset(
    [
        ".3fr",
        ".arw",
        ".cr2",
        ".cr3",
        ".crw",
        ".dcr",
        ".dng",
        ".erf",
        ".iiq",
        ".k25",
        ".kdc",
        ".mef",
        ".mos",
        ".mrw",
        ".nef",
        ".nrw",
        ".orf",
        ".pef",
        ".raf",
        ".raw",
        ".rw2",
        ".rwl",
        ".sr2",
        ".srf",
        ".srw",
        ".x3f",
    ]
)
IMAGE_EXTENSIONS = (
    frozenset([".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif"])
    | RAW_EXTENSIONS
)

# EXIF orientation -> Pillow transpose, the table ImageOps.exif_transpose uses; needed here because the
# simplejpeg fast path yields bare pixels without the EXIF block.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# libraw's `flip` for RAW files whose preview carries no orientation of its own.
_RAW_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


class DecodeError(Exception):
    """A file that cannot be scored; `kind` is a short category for the summary."""

    def __init__(self, path: str | Path, kind: str, detail: str) -> None:
        super().__init__(f"{path}: {kind}: {detail}")
        self.path = str(path)
        self.kind = kind
        self.detail = detail


def default_max_pixels() -> int:
    """Pillow's own refusal threshold (twice MAX_IMAGE_PIXELS), read at call time so tests can lower it."""
    limit = Image.MAX_IMAGE_PIXELS
    return 2 * int(limit) if limit else 2**62


def load_rgb(path: str | Path, min_side: int = DIGIKAM_SIZE, max_pixels: int | None = None) -> np.ndarray:
    """Decode a photo to uint8 RGB (H, W, 3), oriented, reduced towards `min_side` where the codec allows."""
    path = Path(path)
    limit = default_max_pixels() if max_pixels is None else int(max_pixels)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DecodeError(path, "missing", "no such file") from None
    except OSError as err:
        raise DecodeError(path, "unreadable", str(err)) from None
    if not data:
        raise DecodeError(path, "empty", "zero-byte file")
    if path.suffix.lower() in RAW_EXTENSIONS:
        return _load_raw(path, min_side, limit)
    return _load_encoded(path, data, min_side, limit, orientation=None)


def _open(path: Path, data: bytes, limit: int) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise DecodeError(path, "too_large", str(err)) from None
    except UnidentifiedImageError:
        raise DecodeError(path, "not_an_image", "not a recognised image format") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DecodeError(path, "corrupt", str(err)) from None
    width, height = img.size
    if width * height > limit:
        raise DecodeError(
            path, "too_large", f"{width}x{height} = {width * height} pixels exceeds the limit {limit}"
        )
    if width == 0 or height == 0:
        raise DecodeError(path, "corrupt", f"empty image size {width}x{height}")
    return img


def _load_encoded(path: Path, data: bytes, min_side: int, limit: int, orientation: int | None) -> np.ndarray:
    img = _open(path, data, limit)
    try:
        if img.format == "JPEG" and img.mode in ("RGB", "L"):
            # JPEG EXIF sits in the header (cheap); PNG's getexif() would decode the whole image
            exif_orientation = img.getexif().get(0x0112, 1) if orientation is None else orientation
            # simplejpeg picks the smallest DCT scale (1/8 .. 1) keeping both sides >= min_side
            rgb = simplejpeg.decode_jpeg(
                data,
                colorspace="RGB",
                fastdct=False,
                fastupsample=False,
                min_height=min_side,
                min_width=min_side,
            )
            return _orient(rgb, exif_orientation)
        if img.format == "JPEG":  # CMYK / YCCK: Pillow handles Adobe's inverted CMYK
            img.draft(img.mode, (min_side, min_side))
        img.load()
    except Image.DecompressionBombError as err:
        raise DecodeError(path, "too_large", str(err)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        kind = (
            "truncated"
            if "truncated" in str(err).lower() or "premature end" in str(err).lower()
            else "corrupt"
        )
        raise DecodeError(path, kind, str(err)) from None
    if orientation is None:
        img = ImageOps.exif_transpose(img)
    elif orientation in _ORIENTATION:
        img = img.transpose(_ORIENTATION[orientation])
    return to_rgb8(img, path)


def _orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    if orientation not in _ORIENTATION:
        return rgb
    return np.asarray(Image.fromarray(rgb).transpose(_ORIENTATION[orientation]))


def to_rgb8(img: Image.Image, path: str | Path = "<image>") -> np.ndarray:
    """Any Pillow mode -> uint8 RGB. 16-bit and 32-bit gray are scaled, not clipped (Pillow's convert clips)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(img).astype(np.float64)
        # 16-bit PNG/TIFF gray opens as I;16 (or I); its full range is 0..65535
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA").convert("RGB") if img.mode != "RGBA" else img.convert("RGB")
    elif img.mode == "P":
        img = img.convert("RGBA").convert("RGB") if "transparency" in img.info else img.convert("RGB")
    elif img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except ValueError as err:
            raise DecodeError(path, "unsupported", f"pixel mode {img.mode}: {err}") from None
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _load_raw(path: Path, min_side: int, limit: int) -> np.ndarray:
    """Camera RAW: the embedded preview (what digiKam shows before demosaicing), never the sensor data."""
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            flip = int(getattr(raw.sizes, "flip", 0) or 0)
            thumb = raw.extract_thumb()
    except rawpy.LibRawNoThumbnailError:
        raise DecodeError(path, "no_preview", "RAW file has no embedded preview") from None
    except (rawpy.LibRawError, OSError, ValueError) as err:
        raise DecodeError(path, "corrupt", f"RAW: {err}") from None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        data = bytes(thumb.data)
        img = _open(path, data, limit)
        has_exif_orientation = img.getexif().get(0x0112, 1) != 1
        orientation = None if has_exif_orientation else {0: 1, 3: 3, 5: 8, 6: 6}.get(flip, 1)
        return _load_encoded(path, data, min_side, limit, orientation=orientation)
    rgb = np.asarray(thumb.data)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.rint(rgb.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    if flip in _RAW_FLIP:
        rgb = np.asarray(Image.fromarray(rgb).transpose(_RAW_FLIP[flip]))
    return np.ascontiguousarray(rgb[:, :, :3])
