"""The test library's layout: its albums, how often each way of storing a label occurs, and the plan of frames.

`plan_frames` decides everything random about the library (albums, bursts, levels, labels, storage) from one
generator; `library_files` and `library_db` then write what it planned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from iqs.data.demo.distortions import DISTORTIONS

LIBRARY_VERSION = 2  # 2: stars follow the distortion level within the class
MANIFEST = "library.json"
DATABASE = "digikam4.db"
ALBUMS = (
    "2023/Holidays/Beach",
    "2023/Holidays/Old Town",
    "2023/Birthday",
    "2024/Hike/Day 1",
    "2024/Hike/Day 2",
    "2024/Garden",
)
BAD_ALBUM = "Unsorted"
TRASHED = "IMG_trashed.jpg"
STATUS_TRASHED = 3  # Images.status Trashed (coredbconstants.h line 90)
# how a labelled photo stores its label, and how often (unlabelled photos: `unlabelled`)
STORAGE = {
    "sidecar_appended": 0.30,  # photo.jpg.xmp (digiKam's default)
    "sidecar_basename": 0.12,  # photo.xmp (digiKam's "compatible with commercial programs" name)
    "embedded": 0.20,  # XMP inside the JPEG
    "sidecar_over_embedded": 0.06,  # embedded XMP holds a stale label, the sidecar the current one
    "rating_only": 0.08,  # sidecar with Xmp.xmp.Rating, no pick label
    "ms_rating_only": 0.04,  # embedded Xmp.MicrosoftPhoto.Rating only (Windows Photo Gallery)
    "unlabelled": 0.20,
}
# class -> star ratings consistent with rating_classes [1, 3] (-1: XMP "rejected"), and MicrosoftPhoto %
STARS = {0: (1, -1), 1: (2, 3), 2: (4, 5)}
MS_PERCENT = {1: 1, 2: 25, 3: 50, 4: 75, 5: 99}
LABEL_NOISE = 0.05
NO_EXIF_DATE = 0.05  # frames without DateTimeOriginal


@dataclass(frozen=True)
class LibrarySpec:
    crops_per_photo: int = 3
    long_side: int = 128
    photos: tuple[str, ...] | None = None  # a subset of the demo photographs (tests)

    def __post_init__(self) -> None:
        if not 1 <= self.crops_per_photo <= 8:
            raise ValueError(f"crops_per_photo must be in 1..8, got {self.crops_per_photo}")
        if not 32 <= self.long_side <= 384:
            raise ValueError(f"long_side must be in 32..384, got {self.long_side}")


def level_class(level: int) -> int:
    """The photographer's class for a demo distortion level (0-1 good, 2-3 normal, 4-5 bad)."""
    return 2 if level <= 1 else (1 if level <= 3 else 0)


def level_stars(level: int, cls: int, drawn: int) -> int:
    """The photographer's stars: 5 - level (level 0 five stars ... 4-5 one star), which agrees with the
    class under rating_classes [1, 3]; a label moved by noise (or a bad photo marked "rejected", -1, as
    `drawn` says) keeps the stars drawn for its class. So the stars carry a known quality order."""
    stars = max(1, 5 - level)
    if drawn == -1 or stars not in STARS[cls]:
        return drawn
    return stars


@dataclass
class Frame:
    path: str
    album: str
    burst: str
    level: int
    distortion: str
    cls: int | None  # the label the photographer gave (None: unlabelled)
    stars: int | None
    storage: str
    capture: str  # ISO time the camera recorded
    exif_date: bool
    ref: int  # index of the demo crop (the scene)


def plan_frames(refs: list, rng: np.random.Generator) -> list[Frame]:
    names = DISTORTIONS.names()
    storages, weights = list(STORAGE), np.asarray(list(STORAGE.values()))
    frames: list[Frame] = []
    clock = {a: datetime(2023 + i // 3, 1 + 2 * i, 3, 9, 0, 0) for i, a in enumerate(ALBUMS)}
    for r in rng.permutation(len(refs)):
        album = ALBUMS[int(rng.integers(len(ALBUMS)))]
        clock[album] += timedelta(minutes=int(rng.integers(5, 40)))
        t = clock[album]
        burst = f"{album}#{len(frames)}"
        for k in range(int(rng.integers(1, 5))):
            if k:
                t += timedelta(seconds=int(rng.integers(1, 4)))
            level = int(rng.integers(0, 6))
            cls = level_class(level)
            if rng.random() < LABEL_NOISE:
                cls = int(np.clip(cls + rng.choice([-1, 1]), 0, 2))
            storage = storages[int(rng.choice(len(storages), p=weights / weights.sum()))]
            stars = level_stars(level, cls, int(rng.choice(STARS[cls])))
            if storage == "ms_rating_only" and stars == -1:
                stars = 1  # MicrosoftPhoto has no "rejected"
            number = 1000 + len(frames)
            frames.append(
                Frame(
                    path=f"{album}/IMG_{number}.jpg",
                    album=album,
                    burst=burst,
                    level=level,
                    distortion=names[int(rng.integers(len(names)))] if level else "pristine",
                    cls=None if storage == "unlabelled" else cls,
                    stars=None if storage == "unlabelled" else stars,
                    storage=storage,
                    capture=t.isoformat(),
                    exif_date=bool(rng.random() >= NO_EXIF_DATE),
                    ref=int(r),
                )
            )
    return frames
