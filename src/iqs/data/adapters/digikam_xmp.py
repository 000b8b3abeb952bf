"""`dataset=digikam_xmp`: a digiKam album root whose pick labels and ratings live in XMP.

Every image file under `root` (recursively; hidden folders such as digiKam's `.dtrash` are skipped) is read
through exiv2 (pyexiv2). Class rules: `digikam_labels`. Where the XMP comes from follows digiKam's own rule:

- Sidecar name (`sidecar_name`). digiKam 8.x reads ONE name, chosen by its setting "sidecar file names
  compatible with commercial programs" (`useCompatibleFileName`): `photo.xmp` when on, `photo.jpg.xmp`
  when off (`MetaEngine::sidecarFilePathForFile` in core/libs/metadataengine/engine/metaengine_fileio.cpp,
  the 2022+ version). digiKam 6.x took `photo.xmp` when that file exists, else `photo.jpg.xmp` (same
  function, KDE/digikam master 2019-08-07 commit 33d0457e, lines 47-65). `appended` / `basename` / `either`
  reproduce these three; `either` (the default) also reads a library with both naming styles.
- Precedence (`read_sidecars`). When digiKam's "Read from sidecar files" is on (`useXMPSidecar4Reading`,
  `MetaEngine::loadFromSidecarAndMerge`, metaengine_fileio.cpp lines 147-192) and a sidecar exists, its
  XMP REPLACES the file's embedded XMP as a whole ("First: Ignore file XMP, only use sidecar XMP",
  `MetaEngine::Private::loadSidecarData`, core/libs/metadataengine/engine/metaengine_p.cpp lines 725-733):
  a label removed in the sidecar is not taken from the file. With it off, only embedded XMP counts.
  digiKam's default is off (metaenginesettingscontainer.cpp line 56); the default here is on, because a
  library labelled into sidecars is the reason to use this adapter.
- Ratings: `Xmp.xmp.Rating` first, then `Xmp.MicrosoftPhoto.Rating` (percent) converted as digiKam does:
  the steps 0, 1, 25, 50, 75, 99 are 0..5 stars, values between two steps take the lower one
  (`DMetadataSettingsContainer::defaultRatingValues`, dmetadatasettingscontainer.cpp lines 301-361, and
  `DMetadata::getItemRating`, dmetadata_labels.cpp lines 126-200, which reads in that order).

Bad inputs are counted skips with a warning naming the file, never a crash: a sidecar or image exiv2 cannot
parse, a pick label outside 0..3, a rating outside the declared range. A missing root is a DataError.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pandas as pd
import pyexiv2
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from iqs.core.errors import DataError
from iqs.core.xmp import sidecar_path
from iqs.data.adapters.base import ADAPTERS
from iqs.data.adapters.digikam_labels import LabelReport, LabelRules, Photo, load_labels, rules_from_cfg
from iqs.data.adapters.reading import config_key, dataset_root, plain, setting, stated
from iqs.data.bursts import parse_capture_time

log = logging.getLogger("iqs.data.adapters")

PICK_KEY = "Xmp.digiKam.PickLabel"
RATING_KEY = "Xmp.xmp.Rating"
MS_RATING_KEY = "Xmp.MicrosoftPhoto.Rating"
DATE_KEY = "Exif.Photo.DateTimeOriginal"
SIDECAR_NAMES = ("either", "appended", "basename")
# digiKam's MicrosoftPhoto percent steps for 0..5 stars (dmetadatasettingscontainer.cpp line 308)
MS_RATING_STEPS = (0, 1, 25, 50, 75, 99)


def sidecar_for(image: Path, naming: str) -> Path | None:
    """The sidecar digiKam would read for `image` under `naming` (None when there is none)."""
    appended, basename = sidecar_path(image, "appended"), sidecar_path(image, "basename")
    if naming == "appended":
        candidates = [appended]
    elif naming == "basename":
        candidates = [basename]
    else:  # digiKam 6.x: photo.xmp when it exists, else photo.jpg.xmp
        candidates = [basename, appended]
    return next((c for c in candidates if c.is_file()), None)


def ms_rating_to_stars(percent: float) -> float | None:
    """digiKam's conversion of Xmp.MicrosoftPhoto.Rating (0..99) to stars; None when outside 0..99."""
    steps = MS_RATING_STEPS
    if percent < steps[0] or percent > steps[-1]:
        return None
    return float(max(i for i, step in enumerate(steps) if percent >= step))


def _number(value: object) -> float | None:
    if value is None:
        return None
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def xmp_stars(xmp: Mapping, rules: LabelRules) -> tuple[float | None, str | None]:
    """(stars or None, why unusable or None): Xmp.xmp.Rating, else MicrosoftPhoto's percent (digiKam's order)."""
    if RATING_KEY in xmp:
        stars = _number(xmp[RATING_KEY])
        if stars is None:
            return None, f"{RATING_KEY}={xmp[RATING_KEY]!r} is not a number"
        return stars, rules.check_rating(stars)
    if MS_RATING_KEY in xmp:
        percent = _number(xmp[MS_RATING_KEY])
        stars = ms_rating_to_stars(percent) if percent is not None else None
        if stars is None:
            return None, f"{MS_RATING_KEY}={xmp[MS_RATING_KEY]!r} outside 0..99"
        return stars, None
    return None, None


def _read(path: Path) -> tuple[dict, dict]:
    """(EXIF, XMP) of an image or sidecar; exiv2's errors propagate (callers count them)."""
    img = pyexiv2.Image(str(path))
    try:
        exif = img.read_exif() if path.suffix.lower() != ".xmp" else {}
        return exif, img.read_xmp()
    finally:
        img.close()


def image_files(root: Path, extensions: tuple[str, ...]) -> Iterator[Path]:
    """Image files under `root` in a stable order, skipping hidden folders and files (`.dtrash`, ...)."""
    exts = {e.lower().lstrip(".") for e in extensions}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.rpartition(".")[2].lower() in exts:
                yield Path(folder) / name


def read_photo(
    image: Path, rel: str, naming: str, read_sidecars: bool, rules: LabelRules, report: LabelReport
) -> Photo | None:
    """One photo's labels and capture time; None (counted and warned) when it cannot be used."""
    try:
        exif, xmp = _read(image)
    except Exception as err:  # pyexiv2 raises bare RuntimeError from exiv2
        report.skip("unreadable image", rel, f"exiv2 cannot read the image: {err}")
        return None
    origin = "embedded"
    sidecar = sidecar_for(image, naming) if read_sidecars else None
    if sidecar is not None:
        try:
            _, xmp = _read(sidecar)
        except Exception as err:
            side = sidecar.relative_to(image.parent)
            report.skip("malformed sidecar", rel, f"exiv2 cannot parse its sidecar {side}: {err}")
            return None
        origin = "sidecar"

    pick = None
    # a signal the class rule does not use is not validated either (label_from=pick ignores ratings)
    if rules.uses_pick and PICK_KEY in xmp:
        value = _number(xmp[PICK_KEY])
        if value is None or value not in (0, 1, 2, 3):
            where = "sidecar" if sidecar is not None else "embedded XMP"
            report.skip(
                "pick label out of range", rel, f"{where} {PICK_KEY}={xmp[PICK_KEY]!r}, digiKam uses 0..3"
            )
            return None
        pick = int(value)
    stars, problem = xmp_stars(xmp, rules) if rules.uses_rating else (None, None)
    if problem:
        report.skip("rating out of range", rel, problem)
        return None
    return Photo(
        path=rel,
        pick=pick,
        stars=stars,
        capture_time=parse_capture_time(exif.get(DATE_KEY)),
        file_time=image.stat().st_mtime,
        origin=origin,
    )


def read_library(cfg: Mapping) -> tuple[list[Photo], LabelReport, LabelRules]:
    """Every photo under the album root with what its XMP says (unlabelled ones included)."""
    name = str(cfg.get("name") or "digikam_xmp")
    root = dataset_root(cfg)
    if not root.is_dir():
        raise DataError(
            f"album root {root} does not exist or is not a folder. Point "
            f"{setting(cfg, 'root', '<your digiKam album root>')} at the folder digiKam shows as the "
            "collection (Settings > Collections), or build the test library with `iqs data build-library`."
        )
    rules = rules_from_cfg(cfg)
    naming = str(stated(cfg, "sidecar_name"))
    if naming not in SIDECAR_NAMES:
        raise DataError(
            f"{config_key(cfg, 'sidecar_name')} must be one of {', '.join(SIDECAR_NAMES)}, got {naming!r}"
        )
    read_sidecars = bool(stated(cfg, "read_sidecars"))
    extensions = tuple(str(e) for e in plain(stated(cfg, "extensions")))
    files = list(image_files(root, extensions))
    report = LabelReport(source=name, photos=len(files))
    photos: list[Photo] = []
    columns = [TextColumn(f"{name}: reading XMP"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, disable=len(files) < 200, transient=True) as bar:
        task = bar.add_task("xmp", total=len(files))
        for image in files:
            rel = image.relative_to(root).as_posix()
            photo = read_photo(image, rel, naming, read_sidecars, rules, report)
            if photo is not None:
                photos.append(photo)
            bar.advance(task)
    return photos, report, rules


@ADAPTERS.register("digikam_xmp")
def load(cfg: Mapping) -> pd.DataFrame:
    return load_labels(cfg, read_library)
