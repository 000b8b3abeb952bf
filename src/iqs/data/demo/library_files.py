"""The test library's files: JPEG frames with EXIF dates, and their labels stored the ways digiKam stores them."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyexiv2

from iqs.core.xmp import EMPTY_XMP_PACKET, sidecar_path
from iqs.data.demo.distortions import DISTORTIONS
from iqs.data.demo.library_layout import BAD_ALBUM, MS_PERCENT, STARS, Frame
from iqs.data.demo.writers import encode_jpeg


def _write_xmp(path: Path, props: dict[str, str], *, embedded: bool) -> None:
    """Write XMP properties into an image (embedded) or a new sidecar, through exiv2."""
    if not embedded:
        path.write_text(EMPTY_XMP_PACKET, encoding="utf-8")
    img = pyexiv2.Image(str(path))
    try:
        img.modify_xmp(props)
    finally:
        img.close()


def _label_props(cls: int, stars: int, with_pick: bool = True, with_rating: bool = True) -> dict[str, str]:
    props = {}
    if with_pick:
        props["Xmp.digiKam.PickLabel"] = str(cls + 1)
    if with_rating:
        props["Xmp.xmp.Rating"] = str(stars)
    return props


def render_frame(frame: Frame, ref, seed: int, index: int) -> bytes:
    if frame.level == 0:
        return encode_jpeg(ref.rgb, 95)
    d = DISTORTIONS.get(frame.distortion)
    rng = np.random.default_rng([seed, 11, index])
    return encode_jpeg(d(ref.rgb, frame.level, rng), d.quality(frame.level))


def _sidecar_over_embedded(image: Path, cls: int, stars: int) -> None:
    stale = (cls + 1) % 3
    _write_xmp(image, _label_props(stale, STARS[stale][0]), embedded=True)
    _write_xmp(sidecar_path(image, "appended"), _label_props(cls, stars), embedded=False)


# library_layout.STORAGE's ways of storing a label (all but "unlabelled"): (image, class, stars) -> files
STORAGE_WRITERS: dict[str, Callable[[Path, int, int], None]] = {
    "sidecar_appended": lambda im, c, s: _write_xmp(
        sidecar_path(im, "appended"), _label_props(c, s), embedded=False
    ),
    "sidecar_basename": lambda im, c, s: _write_xmp(
        sidecar_path(im, "basename"), _label_props(c, s), embedded=False
    ),
    "embedded": lambda im, c, s: _write_xmp(im, _label_props(c, s), embedded=True),
    "sidecar_over_embedded": _sidecar_over_embedded,
    "rating_only": lambda im, c, s: _write_xmp(
        sidecar_path(im, "appended"), _label_props(c, s, with_pick=False), embedded=False
    ),
    "ms_rating_only": lambda im, c, s: _write_xmp(
        im, {"Xmp.MicrosoftPhoto.Rating": str(MS_PERCENT[s])}, embedded=True
    ),
}


def write_frame(root: Path, frame: Frame, data: bytes) -> None:
    image = root / frame.path
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(data)
    t = datetime.fromisoformat(frame.capture)
    if frame.exif_date:
        img = pyexiv2.Image(str(image))
        try:
            img.modify_exif({"Exif.Photo.DateTimeOriginal": t.strftime("%Y:%m:%d %H:%M:%S")})
        finally:
            img.close()
    if frame.storage != "unlabelled":
        STORAGE_WRITERS[frame.storage](image, frame.cls, frame.stars)
    stamp = t.timestamp()
    os.utime(image, (stamp, stamp))  # frames without EXIF date fall back to this file time


BAD_CASES = {
    # file name in Unsorted/ -> what is wrong with it
    "broken_sidecar.jpg": "malformed sidecar",
    "rating_seven.jpg": "rating out of range",
    "pick_nine.jpg": "pick label out of range",
}


def write_bad_cases(root: Path, ref, when: datetime) -> list[dict]:
    folder = root / BAD_ALBUM
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (name, reason) in enumerate(BAD_CASES.items()):
        image = folder / name
        image.write_bytes(encode_jpeg(ref.rgb, 95))
        sidecar = sidecar_path(image, "appended")
        if reason == "malformed sidecar":
            sidecar.write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF', encoding="utf-8")
        elif reason == "rating out of range":
            _write_xmp(sidecar, {"Xmp.xmp.Rating": "7"}, embedded=False)
        else:
            _write_xmp(sidecar, {"Xmp.digiKam.PickLabel": "9"}, embedded=False)
        stamp = (when + timedelta(hours=i)).timestamp()
        os.utime(image, (stamp, stamp))
        out.append({"path": f"{BAD_ALBUM}/{name}", "reason": reason})
    return out
