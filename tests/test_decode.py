from __future__ import annotations

import io
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from iqs.core import decode
from iqs.core.decode import DecodeError, load_rgb, to_rgb8
from iqs.core.preprocess import digikam_blob, digikam_chw


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.astronaut()[:, :, :3]  # 512 x 512 RGB


def _jpeg(rgb: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def test_jpeg_is_dct_reduced_but_never_below_min_side(tmp_path: Path, photo: np.ndarray) -> None:
    big = cv2.resize(photo, (1600, 1200), interpolation=cv2.INTER_AREA)
    (tmp_path / "a.jpg").write_bytes(_jpeg(big))
    rgb = load_rgb(tmp_path / "a.jpg", min_side=299)
    assert rgb.shape == (300, 400, 3)  # 1/4 scale: 1/8 would be 150 px high
    full = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))
    reduced_ref = cv2.resize(full, (400, 300), interpolation=cv2.INTER_AREA)
    assert np.abs(rgb.astype(int) - reduced_ref.astype(int)).mean() < 4


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_applied(tmp_path: Path, photo: np.ndarray, orientation: int) -> None:
    rgb = photo[:300, :480]
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    path.write_bytes(_jpeg(rgb, exif=exif.tobytes()))
    got = load_rgb(path, min_side=4096)
    expected = np.asarray(ImageOpsRef.transpose(Image.open(path)))
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 1.0
    if orientation in (6, 8):
        assert got.shape[:2] == (480, 300)


class ImageOpsRef:
    @staticmethod
    def transpose(img: Image.Image) -> Image.Image:
        from PIL import ImageOps

        return ImageOps.exif_transpose(img.convert("RGB"))


def test_digikam_chw_equals_digikam_blob(photo: np.ndarray) -> None:
    for shape in ((300, 400), (333, 222), (120, 900)):
        rgb = cv2.resize(photo, shape[::-1], interpolation=cv2.INTER_AREA)
        blob = digikam_blob(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert blob.shape == (1, 3, 299, 299) and blob.dtype == np.float32
        np.testing.assert_array_equal(digikam_chw(rgb), blob[0])
        assert blob.min() >= -1 and blob.max() <= 1


# ---- bad inputs: errors with the file named


@pytest.mark.parametrize(
    ("name", "payload", "kind"),
    [
        ("zero.jpg", b"", "empty"),
        ("notes.jpg", b"shopping list: milk, eggs\n" * 20, "not_an_image"),
        ("badheader.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not_an_image"),
    ],
)
def test_invalid_files(tmp_path: Path, name: str, payload: bytes, kind: str) -> None:
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(DecodeError) as err:
        load_rgb(path)
    assert err.value.kind == kind and name in str(err.value)


def test_truncated_jpeg(tmp_path: Path, photo: np.ndarray) -> None:
    payload = _jpeg(photo)
    path = tmp_path / "cut.jpg"
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DecodeError, match="cut.jpg") as err:
        load_rgb(path)
    assert err.value.kind == "truncated"


def test_corrupt_jpeg_body(tmp_path: Path, photo: np.ndarray) -> None:
    payload = bytearray(_jpeg(photo))
    payload[600:4000] = bytes(np.random.default_rng(0).integers(0, 256, 3400, dtype=np.uint8))
    path = tmp_path / "bits.jpg"
    path.write_bytes(bytes(payload))
    with pytest.raises(DecodeError, match="bits.jpg"):
        load_rgb(path)


def test_corrupt_png_data(tmp_path: Path, photo: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    payload = bytearray(buf.getvalue())
    payload[len(payload) // 2 : len(payload) // 2 + 2000] = b"\xff" * 2000
    path = tmp_path / "broken.png"
    path.write_bytes(bytes(payload))
    with pytest.raises(DecodeError, match="broken.png") as err:
        load_rgb(path)
    assert err.value.kind in ("corrupt", "truncated")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecodeError) as err:
        load_rgb(tmp_path / "gone.jpg")
    assert err.value.kind == "missing"


def test_pixel_limit(tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(photo).save(path)
    with pytest.raises(DecodeError, match="exceeds the limit") as err:
        load_rgb(path, max_pixels=512 * 512 - 1)
    assert err.value.kind == "too_large"
    assert load_rgb(path, max_pixels=512 * 512).shape == (512, 512, 3)
    # the default follows Pillow's own decompression-bomb threshold
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(DecodeError) as err:
        load_rgb(path)
    assert err.value.kind == "too_large"


# ---- unusual but valid photos are converted and scored


def test_cmyk_jpeg(tmp_path: Path, photo: np.ndarray) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(photo).convert("CMYK").save(path, quality=95)
    rgb = load_rgb(path, min_side=4096)
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
    ref = np.asarray(Image.open(path).convert("RGB").resize(rgb.shape[1::-1], Image.Resampling.BOX))
    assert np.abs(rgb.astype(int) - ref.astype(int)).mean() < 3


def test_16bit_gray_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))
    path = tmp_path / "g16.png"
    Image.fromarray(ramp).save(path)
    rgb = load_rgb(path)
    np.testing.assert_array_equal(rgb[:, :, 0], np.rint(ramp / 257).astype(np.uint8))
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255 and len(np.unique(rgb)) > 60


def test_16bit_rgb_png(tmp_path: Path, photo: np.ndarray) -> None:
    path = tmp_path / "rgb16.png"
    cv2.imwrite(str(path), cv2.cvtColor(photo.astype(np.uint16) * 257, cv2.COLOR_RGB2BGR))
    np.testing.assert_allclose(load_rgb(path).astype(int), photo.astype(int), atol=1)


def test_grayscale_and_alpha(tmp_path: Path, photo: np.ndarray) -> None:
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    Image.fromarray(gray).save(tmp_path / "g.png")
    rgb = load_rgb(tmp_path / "g.png")
    assert all(np.array_equal(rgb[:, :, c], gray) for c in range(3))
    rgba = np.dstack([photo, np.full(photo.shape[:2], 40, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.png"), photo)  # alpha dropped, as digiKam does


@pytest.mark.slow
def test_heic_round_trip(tmp_path: Path, photo: np.ndarray) -> None:
    from pillow_heif import from_bytes

    path = tmp_path / "p.heic"
    heif = from_bytes(mode="RGB", size=(photo.shape[1], photo.shape[0]), data=photo.tobytes())
    heif.save(str(path), quality=95)
    rgb = load_rgb(path)
    assert rgb.shape == photo.shape
    assert np.abs(rgb.astype(int) - photo.astype(int)).mean() < 6


def test_raw_uses_embedded_preview(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No RAW file can be generated here, so rawpy is replaced by a fake exposing libraw's preview API."""
    import rawpy

    preview = _jpeg(photo[:, :400])

    class FakeRaw:
        sizes = types.SimpleNamespace(flip=6)  # portrait: libraw says rotate 90 degrees clockwise

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def extract_thumb(self):
            return types.SimpleNamespace(format=rawpy.ThumbFormat.JPEG, data=preview)

    monkeypatch.setattr(rawpy, "imread", lambda path: FakeRaw())
    path = tmp_path / "DSC_0001.NEF"
    path.write_bytes(b"II*\x00 not really a raw file")
    rgb = load_rgb(path, min_side=4096)
    expected = np.rot90(np.asarray(Image.open(io.BytesIO(preview)).convert("RGB")), k=-1)
    assert rgb.shape == expected.shape == (400, 512, 3)
    assert np.abs(rgb.astype(int) - expected.astype(int)).mean() < 1

    def no_thumb(path):
        raise rawpy.LibRawNoThumbnailError()

    monkeypatch.setattr(rawpy, "imread", no_thumb)
    with pytest.raises(DecodeError, match="DSC_0001.NEF") as err:
        load_rgb(path)
    assert err.value.kind == "no_preview"


def test_to_rgb8_palette_and_modes() -> None:
    pal = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P")
    assert to_rgb8(pal).shape == (8, 8, 3)
    assert set(decode.RAW_EXTENSIONS) <= set(decode.IMAGE_EXTENSIONS)


# TIFF as cameras, scanners and raw converters write it, written by tifffile (not by the Pillow we decode with)
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("layout", [{}, {"compression": "zlib"}, {"compression": "zlib", "tile": (64, 64)}])
def test_tiff_8_and_16_bit_rgb_and_grey(
    tmp_path: Path, photo: np.ndarray, bits: int, channels: int, layout: dict
) -> None:
    import tifffile

    pixels = photo if channels == 3 else cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    stored = pixels.astype(np.uint16) * 257 if bits == 16 else pixels  # full 16-bit range
    path = tmp_path / f"p{bits}_{channels}.tif"
    tifffile.imwrite(path, stored, photometric="rgb" if channels == 3 else "minisblack", **layout)
    rgb = load_rgb(path)
    expected = pixels if channels == 3 else np.repeat(pixels[:, :, None], 3, axis=2)
    assert rgb.dtype == np.uint8 and rgb.shape == photo.shape
    np.testing.assert_array_equal(rgb, expected)


def test_tiff_16_bit_values_between_8_bit_levels(tmp_path: Path) -> None:
    import tifffile

    values = np.arange(0, 65536, 97, dtype=np.uint16)[: 64 * 10].reshape(10, 64)
    tifffile.imwrite(tmp_path / "g.tif", values, photometric="minisblack")
    np.testing.assert_array_equal(
        load_rgb(tmp_path / "g.tif")[:, :, 0], np.rint(values / 257).astype(np.uint8)
    )
    rgb16 = np.stack([values, values[::-1], values[:, ::-1]], axis=2)
    tifffile.imwrite(tmp_path / "c.tif", rgb16, photometric="rgb")
    got = load_rgb(tmp_path / "c.tif").astype(int)
    assert np.abs(got - np.rint(rgb16 / 257)).max() <= 1  # Pillow keeps the high byte of 16-bit RGB


def test_tiff_orientation_tag_is_applied(tmp_path: Path, photo: np.ndarray) -> None:
    import tifffile

    wide = photo[:200]  # 200 x 512
    tifffile.imwrite(tmp_path / "o.tif", wide, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    np.testing.assert_array_equal(load_rgb(tmp_path / "o.tif"), np.rot90(wide, k=-1))  # 6 = rotate 90 CW
