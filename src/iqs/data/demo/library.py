"""A test digiKam library built from the demo photographs: what a photographer's culled collection looks like.

`iqs data build-library [out_dir=PATH] [seed=INT] [force=true]` writes, deterministically from the seed and
in a few seconds:

- nested albums (`2023/Holidays/Beach`, `2024/Hike/Day 1`, ...) holding shoots: bursts of 1-4 frames of one
  scene (a demo crop) taken 1-3 s apart, with EXIF `DateTimeOriginal`; shoots are minutes apart;
- each frame a demo distortion at a random level, and the photographer's label following its quality
  (level 0-1 good, 2-3 normal, 4-5 bad; 5 % of labels moved one class, as people disagree with themselves);
- labels stored the ways digiKam stores them: `photo.jpg.xmp` sidecars (digiKam's default name),
  `photo.xmp` sidecars (its "compatible" name), XMP embedded in the JPEG, a sidecar that overrides a stale
  embedded label, ratings only (`Xmp.xmp.Rating`, or `Xmp.MicrosoftPhoto.Rating` percent), and unlabelled
  photos; pick label and stars always agree under the default rating_classes [1, 3];
- a few frames without EXIF date (their file time is the capture time);
- `digikam4.db`, built from digiKam's schema (`iqs.data.adapters.digikam_schema`) with the same labels, as
  digiKam's scanner would have read them (it sees no label in a broken sidecar and no rating of 7);
- bad cases in `Unsorted/`: a malformed sidecar, a rating out of range, a pick label out of range; in the
  database also a trashed image and a rating out of range.

`library.json` records the truth per photo (class, storage, burst) for tests and for the README numbers.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyexiv2

from iqs.data.adapters.digikam_schema import (
    CATEGORY_IMAGE,
    INTERNAL_TAGS_ROOT,
    PICK_LABEL_TAGS,
    SCHEMA_VERSION,
    SCHEMAS,
    STATUS_VISIBLE,
)
from iqs.data.demo.distortions import DISTORTIONS
from iqs.data.demo.references import make_references
from iqs.data.demo.writers import encode_jpeg
from iqs.deploy.xmp import EMPTY_XMP_PACKET

LIBRARY_VERSION = 1
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


def _plan(refs: list, rng: np.random.Generator) -> list[Frame]:
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
            stars = int(rng.choice(STARS[cls]))
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


def _render(frame: Frame, ref, seed: int, index: int) -> bytes:
    if frame.level == 0:
        return encode_jpeg(ref.rgb, 95)
    d = DISTORTIONS.get(frame.distortion)
    rng = np.random.default_rng([seed, 11, index])
    return encode_jpeg(d(ref.rgb, frame.level, rng), d.quality(frame.level))


def _write_frame(root: Path, frame: Frame, data: bytes) -> None:
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
    appended = image.with_name(image.name + ".xmp")
    basename = image.with_suffix(".xmp")
    cls, stars, s = frame.cls, frame.stars, frame.storage
    if s == "sidecar_appended":
        _write_xmp(appended, _label_props(cls, stars), embedded=False)
    elif s == "sidecar_basename":
        _write_xmp(basename, _label_props(cls, stars), embedded=False)
    elif s == "embedded":
        _write_xmp(image, _label_props(cls, stars), embedded=True)
    elif s == "sidecar_over_embedded":
        stale = (cls + 1) % 3
        _write_xmp(image, _label_props(stale, STARS[stale][0]), embedded=True)
        _write_xmp(appended, _label_props(cls, stars), embedded=False)
    elif s == "rating_only":
        _write_xmp(appended, _label_props(cls, stars, with_pick=False), embedded=False)
    elif s == "ms_rating_only":
        _write_xmp(image, {"Xmp.MicrosoftPhoto.Rating": str(MS_PERCENT[stars])}, embedded=True)
    stamp = t.timestamp()
    os.utime(image, (stamp, stamp))  # frames without EXIF date fall back to this file time


BAD_CASES = {
    # file name in Unsorted/ -> what is wrong with it
    "broken_sidecar.jpg": "malformed sidecar",
    "rating_seven.jpg": "rating out of range",
    "pick_nine.jpg": "pick label out of range",
}


def _write_bad_cases(root: Path, ref, when: datetime) -> list[dict]:
    folder = root / BAD_ALBUM
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (name, reason) in enumerate(BAD_CASES.items()):
        image = folder / name
        image.write_bytes(encode_jpeg(ref.rgb, 95))
        sidecar = image.with_name(name + ".xmp")
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


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000")


def write_database(
    root: Path, frames: list[Frame], bad: list[dict], db_path: Path, schema_version: int = SCHEMA_VERSION
) -> dict:
    """digikam4.db with one album root (identified by path, as digiKam does for a plain folder)."""
    con = sqlite3.connect(db_path)
    try:
        con.executescript(SCHEMAS[schema_version])
        con.executemany(
            "INSERT INTO Settings (keyword, value) VALUES (?, ?)",
            [("DBVersion", str(schema_version)), ("DBVersionRequired", str(schema_version))],
        )
        # digiKam: volumeid:?path=<absolute path>, specificPath "/" (collectionmanager_location.cpp line 79)
        con.execute(
            "INSERT INTO AlbumRoots (id, label, status, type, identifier, specificPath) "
            "VALUES (1, 'Pictures', 0, 1, ?, '/')",
            (f"volumeid:?path={root.resolve().as_posix()}",),
        )
        cur = con.execute("INSERT INTO Tags (pid, name) VALUES (0, ?)", (INTERNAL_TAGS_ROOT,))
        internal = cur.lastrowid
        con.execute("INSERT INTO TagProperties VALUES (?, 'internalTag', NULL)", (internal,))
        pick_tag = {}
        for value, tag in PICK_LABEL_TAGS.items():
            cur = con.execute("INSERT INTO Tags (pid, name) VALUES (?, ?)", (internal, tag))
            pick_tag[value] = cur.lastrowid
            con.execute("INSERT INTO TagProperties VALUES (?, 'internalTag', NULL)", (cur.lastrowid,))
        albums: dict[str, int] = {}

        def album_id(folder: str) -> int:
            rel = "/" + folder if folder else "/"
            if rel not in albums:
                if folder:
                    album_id(folder.rpartition("/")[0])
                cur = con.execute(
                    "INSERT INTO Albums (albumRoot, relativePath, date) VALUES (1, ?, '2024-01-01')", (rel,)
                )
                albums[rel] = cur.lastrowid
            return albums[rel]

        def add_image(path: str, status: int, rating: int, pick: int | None) -> None:
            folder, _, name = path.rpartition("/")
            f = root / path
            mtime = datetime.fromtimestamp(f.stat().st_mtime)
            cur = con.execute(
                "INSERT INTO Images (album, name, status, category, modificationDate, fileSize) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (album_id(folder), name, status, CATEGORY_IMAGE, _iso(mtime), f.stat().st_size),
            )
            image_id = cur.lastrowid
            # creationDate: DateTimeOriginal, else the file time (digiKam's scanner does the same)
            con.execute(
                "INSERT INTO ImageInformation (imageid, rating, creationDate, format) VALUES (?, ?, ?, 'JPG')",
                (image_id, rating, _iso(mtime)),
            )
            if pick is not None:
                con.execute("INSERT INTO ImageTags VALUES (?, ?)", (image_id, pick_tag[pick]))

        for fr in frames:
            has_pick = fr.storage not in ("unlabelled", "rating_only", "ms_rating_only")
            rating = fr.stars if fr.stars is not None and fr.stars >= 0 else -1
            if fr.storage == "unlabelled":
                rating = -1
            elif fr.stars == -1:
                rating = -1  # digiKam reads XMP -1 as no rating; the DB holds NoRating
            add_image(fr.path, STATUS_VISIBLE, rating, fr.cls + 1 if has_pick else None)
        for case in bad:
            # digiKam's scanner sees no label in a broken sidecar; a rating of 7 in the database is what
            # another tool writing into it could leave (digiKam itself would store -1)
            rating = 7 if case["reason"] == "rating out of range" else -1
            add_image(case["path"], STATUS_VISIBLE, rating, None)
        # a trashed photo keeps its row and labels (status Trashed); its file is in .dtrash
        trash = root / ".dtrash" / "files"
        trash.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / frames[0].path, trash / TRASHED)
        add_image(f".dtrash/files/{TRASHED}", STATUS_TRASHED, 5, 3)
        con.commit()
    finally:
        con.close()
    return {"album_roots": 1, "albums": len(albums), "images": len(frames) + len(bad) + 1, "trashed": 1}


def build_library(out_dir: Path, seed: int = 0, spec: LibrarySpec | None = None) -> dict:
    """Write the library into `out_dir` (must be empty or absent) and return its manifest."""
    spec = spec or LibrarySpec()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: the library is built into an empty folder (force=true rebuilds)")
    start = time.perf_counter()
    refs = make_references(
        seed, spec.crops_per_photo, spec.long_side, list(spec.photos) if spec.photos else None
    )
    rng = np.random.default_rng([seed, 10])
    frames = _plan(refs, rng)
    for i, fr in enumerate(frames):
        _write_frame(out_dir, fr, _render(fr, refs[fr.ref], seed, i))
    bad = _write_bad_cases(out_dir, refs[0], datetime(2024, 6, 1, 12))
    db = write_database(out_dir, frames, bad, out_dir / DATABASE)
    labelled = [f for f in frames if f.cls is not None]
    manifest = {
        "version": LIBRARY_VERSION,
        "seed": seed,
        "spec": {**asdict(spec), "photos": list(spec.photos) if spec.photos else None},
        "photos": len(frames) + len(bad),
        "labelled": len(labelled),
        "unlabelled": len(frames) - len(labelled),
        "classes": {c: sum(f.cls == i for f in labelled) for i, c in enumerate(("bad", "normal", "good"))},
        "storage": {s: sum(f.storage == s for f in frames) for s in STORAGE},
        "bursts": len({f.burst for f in frames}),
        "bad_cases": bad,
        "database": {"file": DATABASE, "schema_version": SCHEMA_VERSION, **db},
        "frames": [asdict(f) for f in frames],
        "seconds": round(time.perf_counter() - start, 2),
        "note": "synthetic test library: demo photographs with simulated culling, not a real photographer",
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def read_manifest(out_dir: Path) -> dict | None:
    try:
        return json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def ensure_library(
    out_dir: Path, seed: int = 0, spec: LibrarySpec | None = None, force: bool = False
) -> Path:
    """Build unless a library of this version, seed and spec is already there."""
    out_dir = Path(out_dir)
    spec = spec or LibrarySpec()
    m = read_manifest(out_dir)
    wanted = {**asdict(spec), "photos": list(spec.photos) if spec.photos else None}
    if (
        not force
        and m
        and (m.get("version"), m.get("seed"), m.get("spec")) == (LIBRARY_VERSION, seed, wanted)
    ):
        return out_dir
    if out_dir.exists():
        shutil.rmtree(out_dir)
    build_library(out_dir, seed, spec)
    return out_dir


KEYS = ("out_dir", "seed", "force", "crops_per_photo", "long_side")
USAGE = (
    "usage: iqs data build-library [out_dir=PATH] [seed=INT] [force=true|false] "
    "[crops_per_photo=INT (scenes per demo photograph, default 3)] [long_side=PX (default 128)]"
)


def _int(args: dict[str, str], key: str, default: int) -> int:
    try:
        return int(args.get(key, default))
    except ValueError:
        raise ValueError(f"{key} must be an integer, got '{args[key]}'") from None


def main(argv: list[str] | None = None) -> int:
    from iqs.data.demo.command import _bool, default_out_dir

    args: dict[str, str] = {}
    for arg in sys.argv[1:] if argv is None else argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            hint = difflib.get_close_matches(key, KEYS, n=1)
            print(
                f"unknown argument '{arg}'" + (f"; did you mean '{hint[0]}'?" if hint else "") + f"\n{USAGE}",
                file=sys.stderr,
            )
            return 2
        args[key] = value
    out = Path(args.get("out_dir") or default_out_dir().parent / "library")
    try:
        seed = _int(args, "seed", 0)
        force = _bool("force", args.get("force", "false"))
        spec = LibrarySpec(
            crops_per_photo=_int(args, "crops_per_photo", LibrarySpec.crops_per_photo),
            long_side=_int(args, "long_side", LibrarySpec.long_side),
        )
    except ValueError as exc:
        print(f"{exc}\n{USAGE}", file=sys.stderr)
        return 2
    ensure_library(out, seed, spec, force=force)
    m = read_manifest(out) or {}
    print(
        f"{out}: {m.get('photos')} photos in {len(ALBUMS) + 1} albums, {m.get('labelled')} labelled "
        f"{m.get('classes')}, {m.get('unlabelled')} unlabelled, {m.get('bursts')} bursts, "
        f"{len(m.get('bad_cases', []))} bad cases, {DATABASE} (schema {SCHEMA_VERSION}); built in {m.get('seconds')} s"
    )
    return 0
