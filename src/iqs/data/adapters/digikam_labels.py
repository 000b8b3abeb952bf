"""A photographer's own labels (digiKam pick labels and star ratings) as SampleTable rows.

Shared by `dataset=digikam_xmp` (XMP sidecars / embedded XMP) and `dataset=digikam_db` (digikam4.db).

Class rules (declared in conf/dataset/digikam_*.yaml):

- pick label (`Xmp.digiKam.PickLabel`, or the internal "Pick Label ..." tags in the database):
  1 Rejected -> bad, 2 Pending -> normal, 3 Accepted -> good, 0 None -> no label. digiKam itself accepts
  only 0..3 (`DMetadata::getItemPickLabel`, core/libs/metadataengine/dmetadata/dmetadata_labels.cpp
  lines 42-66); anything else is a counted skip.
- star rating, mapped by a threshold pair `rating_classes: [r1, r2]` on the native scale (`rating_scale`,
  digiKam's 0..5 stars: `RatingMin`/`RatingMax` in core/app/utils/digikam_globals.h): stars <= r1 bad,
  <= r2 normal, the rest good, the same rule as the score thresholds (README, "Labels and splits"). 0 stars is "unrated"
  (XMP specification: 0 = no rating), so no label. -1 is "rejected" in the XMP specification (Lightroom
  writes it) and bad here when `rejected_rating: true`; digiKam itself reads -1 as no rating (it is not in
  the 0..5 table of `DMetadata::getItemRating`), which `rejected_rating: false` reproduces.
- `label_from`: `pick`, `rating`, or `both` (the pick label wins where a photo has both).

The class goes into the table as `raw_score` = class index (native range [0, 2]), so `score` is 1 / 5.5 /
10 on the common scale; the dataset config pins the source's thresholds between those points
(`thresholds: {t1: 3.25, t2: 7.75}`) so the mixture's label is the photographer's class whatever the global
threshold pair is. Split groups are bursts (iqs.data.bursts). Photos without a label are not training
data: they are counted in the report, never in the table.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from iqs.core.errors import DataError
from iqs.core.scale import CLASS_NAMES, to_common
from iqs.data.adapters.columns import gaussian_table
from iqs.data.adapters.reading import (
    config_key,
    groups,
    native_range,
    plain,
    positive_setting,
    required,
    setting,
    stated,
)
from iqs.data.bursts import burst_ids, check_gap

log = logging.getLogger("iqs.data.adapters")

LABEL_FROM = ("pick", "rating", "both")
# digiKam pick label -> class (0 bad, 1 normal, 2 good); 0 (None) is no label
PICK_TO_CLASS = {1: 0, 2: 1, 3: 2}
CLASS_RANGE = (0.0, 2.0)  # raw_score is the class index
# how many skipped files a warning names before giving only the count
QUOTE = 5


@dataclass(frozen=True)
class LabelRules:
    label_from: str = "both"
    rating_scale: tuple[float, float] = (0.0, 5.0)
    rating_classes: tuple[float, float] = (1.0, 3.0)
    rejected_rating: bool = True

    def rating_class(self, stars: float) -> int | None:
        """Class of a star rating already checked by `check_rating`; None = unrated."""
        if stars == -1:
            return 0 if self.rejected_rating else None
        if stars == 0:
            return None
        r1, r2 = self.rating_classes
        return 0 if stars <= r1 else (1 if stars <= r2 else 2)

    def check_rating(self, stars: float) -> str | None:
        """None when usable, else why not (for the skip warning)."""
        lo, hi = self.rating_scale
        if stars == -1 or (lo <= stars <= hi and float(stars).is_integer()):
            return None
        return f"rating {stars:g} outside the declared range [{lo:g}, {hi:g}] (or -1, rejected)"

    @property
    def uses_pick(self) -> bool:
        return self.label_from in ("pick", "both")

    @property
    def uses_rating(self) -> bool:
        return self.label_from in ("rating", "both")

    def decide(self, pick: int | None, stars: float | None) -> tuple[int | None, str | None]:
        """(class or None, which signal decided it: 'pick' / 'rating' / None)."""
        if self.uses_pick and pick in PICK_TO_CLASS:
            return PICK_TO_CLASS[pick], "pick"
        if self.uses_rating and stars is not None:
            cls = self.rating_class(stars)
            if cls is not None:
                return cls, "rating"
        return None, None


def rules_from_cfg(cfg: Mapping) -> LabelRules:
    label_from = str(stated(cfg, "label_from"))
    if label_from not in LABEL_FROM:
        raise DataError(
            f"{config_key(cfg, 'label_from')} must be one of {', '.join(LABEL_FROM)}, got {label_from!r}"
        )
    rating_scale = native_range(cfg, "rating_scale")
    pair = plain(stated(cfg, "rating_classes"))
    try:
        r1, r2 = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise DataError(
            f"{config_key(cfg, 'rating_classes')} must be a pair [r1, r2] (stars <= r1 bad, <= r2 normal), "
            f"got {pair!r}"
        ) from None
    lo, hi = rating_scale
    if not (lo <= r1 < r2 < hi):
        raise DataError(
            f"{config_key(cfg, 'rating_classes')} must satisfy {lo:g} <= r1 < r2 < {hi:g} "
            f"(the rating range), got [{r1:g}, {r2:g}]"
        )
    return LabelRules(label_from, rating_scale, (r1, r2), bool(stated(cfg, "rejected_rating")))


def check_class_range(cfg: Mapping) -> None:
    """native_range must be the class index [0, 2]: raw_score holds the class, not a rating."""
    if native_range(cfg) != CLASS_RANGE:
        raise DataError(
            f"{config_key(cfg, 'native_range')} must be [0, 2] for digiKam labels (raw_score is the class "
            f"index 0 bad / 1 normal / 2 good); the rating scale is {config_key(cfg, 'rating_scale')}. "
            f"Set {setting(cfg, 'native_range', '[0,2]')}."
        )


@dataclass
class Photo:
    """What one photo's metadata says (before the class rule)."""

    path: str  # relative to the dataset root, '/'-separated
    pick: int | None = None
    stars: float | None = None
    capture_time: float | None = None  # seconds; EXIF DateTimeOriginal / DB creationDate
    file_time: float | None = None  # mtime, the declared fallback
    origin: str = ""  # where the label was read: sidecar / embedded / database


@dataclass
class LabelReport:
    """Counts of what a library held; `skipped` maps a reason to the files it hit."""

    source: str
    photos: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    decided_by: dict[str, int] = field(default_factory=dict)
    origins: dict[str, int] = field(default_factory=dict)
    unlabelled: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    time_from_file: int = 0  # photos whose capture time fell back to the file time
    bursts: int = 0

    def skip(self, reason: str, path: str, detail: str) -> None:
        self.skipped.setdefault(reason, []).append(path)
        log.warning("%s: %s: skipped (%s)", self.source, path, detail)

    @property
    def labelled(self) -> int:
        return sum(self.classes.values())

    def as_dict(self) -> dict:
        return {
            "photos": self.photos,
            "labelled": self.labelled,
            "classes": dict(self.classes),
            "decided_by": dict(self.decided_by),
            "origins": dict(self.origins),
            "unlabelled": len(self.unlabelled),
            "skipped": {k: len(v) for k, v in self.skipped.items()},
            "time_from_file": self.time_from_file,
            "bursts": self.bursts,
        }

    def log(self) -> None:
        skipped = ", ".join(f"{len(v)} {k}" for k, v in self.skipped.items()) or "none"
        log.info(
            "%s: %d photos: %d labelled %s, %d unlabelled (not training data), skipped: %s; "
            "%d bursts; capture time from the file time for %d",
            self.source,
            self.photos,
            self.labelled,
            self.classes,
            len(self.unlabelled),
            skipped,
            self.bursts,
            self.time_from_file,
        )


def load_labels(
    cfg: Mapping, read: Callable[[Mapping], tuple[list[Photo], LabelReport, LabelRules]]
) -> pd.DataFrame:
    """A digiKam adapter's load: check the class range, `read` the photos, and build their table."""
    check_class_range(cfg)
    photos, report, rules = read(cfg)
    return labels_table(cfg, photos, rules, report)


def labels_table(cfg: Mapping, photos: list[Photo], rules: LabelRules, report: LabelReport) -> pd.DataFrame:
    """SampleTable of the labelled photos (module doc); fills the report's counts."""
    name = str(required(cfg, "name"))
    default_std = positive_setting(cfg, "default_std", default=1.0)
    try:
        gap = check_gap(stated(cfg, "burst_gap_s"))
    except ValueError as exc:
        raise DataError(f"{config_key(cfg, 'burst_gap_s')}: {exc}") from None

    kept, classes = _decide(photos, rules, report)
    burst_of = _bursts(photos, gap, report)
    paths = [p.path for p in kept]
    bursts = [burst_of[p] for p in paths]
    report.bursts = len(set(bursts))
    raw = np.asarray(classes, dtype=np.float64)
    table = gaussian_table(
        name, paths, paths, raw, to_common(raw, *CLASS_RANGE), default_std, group=groups(cfg, bursts)
    )
    report.log()
    table.attrs["digikam_report"] = report.as_dict()
    return table


def _decide(photos: list[Photo], rules: LabelRules, report: LabelReport) -> tuple[list[Photo], list[int]]:
    """The labelled photos and their classes; the report counts classes, deciding rules and origins."""
    kept, classes, decided, origins = [], [], Counter(), Counter()
    for p in photos:
        cls, by = rules.decide(p.pick, p.stars)
        if cls is None:
            report.unlabelled.append(p.path)
            continue
        kept.append(p)
        classes.append(cls)
        decided[by] += 1
        origins[p.origin] += 1
    report.classes = {CLASS_NAMES[c]: int(n) for c, n in sorted(Counter(classes).items())}
    report.decided_by = dict(decided)
    report.origins = dict(origins)
    return kept, classes


def _bursts(photos: list[Photo], gap: float, report: LabelReport) -> dict[str, str]:
    """Path -> burst id over every readable photo, labelled or not: an unlabelled frame between two
    labelled ones still joins them into one burst."""
    times = []
    for p in photos:
        if p.capture_time is None:
            report.time_from_file += 1
        times.append(p.capture_time if p.capture_time is not None else p.file_time)
    folders = [p.path.rpartition("/")[0] for p in photos]
    if not photos:
        return {}
    return dict(zip((p.path for p in photos), burst_ids(folders, times, gap), strict=True))
