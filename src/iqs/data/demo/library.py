"""A test digiKam library built from the demo photographs: what a photographer's culled collection looks like.

`iqs data build-library [out_dir=PATH] [seed=INT] [force=true]` writes, deterministically from the seed and
in a few seconds:

- nested albums (`2023/Holidays/Beach`, `2024/Hike/Day 1`, ...) holding shoots: bursts of 1-4 frames of one
  scene (a demo crop) taken 1-3 s apart, with EXIF `DateTimeOriginal`; shoots are minutes apart;
- each frame a demo distortion at a random level, and the photographer's label following its quality
  (level 0-1 good, 2-3 normal, 4-5 bad; 5 % of labels moved one class, as people disagree with themselves),
  the stars too (5 - level, at least 1; `level_stars`), so the frames of a burst differ in a known
  distortion level: the truth for star agreement and for best-of-burst (`library.json`: `level`, `burst`);
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

import json
import shutil
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from iqs.core.classes import CLASS_NAMES
from iqs.core.errors import DataError
from iqs.data.adapters.digikam_schema import SCHEMA_VERSION
from iqs.data.demo.build import check_replaceable, read_record
from iqs.data.demo.library_db import write_database
from iqs.data.demo.library_files import render_frame, write_bad_cases, write_frame
from iqs.data.demo.library_layout import (
    ALBUMS,
    DATABASE,
    LIBRARY_VERSION,
    MANIFEST,
    STORAGE,
    Frame,
    LibrarySpec,
    level_class,
    plan_frames,
)
from iqs.data.demo.references import make_references

# re-exported: the library's public names, wherever they are defined
__all__ = [
    "ALBUMS",
    "DATABASE",
    "Frame",
    "LibrarySpec",
    "build_library",
    "ensure_library",
    "level_class",
    "main",
    "read_manifest",
    "write_database",
]


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
    frames = plan_frames(refs, rng)
    for i, fr in enumerate(frames):
        write_frame(out_dir, fr, render_frame(fr, refs[fr.ref], seed, i))
    bad = write_bad_cases(out_dir, refs[0], datetime(2024, 6, 1, 12))
    db = write_database(out_dir, frames, bad, out_dir / DATABASE)
    labelled = [f for f in frames if f.cls is not None]
    manifest = {
        "version": LIBRARY_VERSION,
        "seed": seed,
        "spec": {**asdict(spec), "photos": list(spec.photos) if spec.photos else None},
        "photos": len(frames) + len(bad),
        "labelled": len(labelled),
        "unlabelled": len(frames) - len(labelled),
        "classes": {c: sum(f.cls == i for f in labelled) for i, c in enumerate(CLASS_NAMES)},
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
    return read_record(Path(out_dir) / MANIFEST)


def ensure_library(
    out_dir: Path, seed: int = 0, spec: LibrarySpec | None = None, force: bool = False
) -> Path:
    """Build unless a library of this version, seed and spec is already there.

    Raises DataError, touching nothing, when `out_dir` holds files but no library.json and force is false."""
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
    if not force:
        check_replaceable(out_dir, MANIFEST, "iqs data build-library")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    build_library(out_dir, seed, spec)
    return out_dir


def _integer(cfg: Any, key: str) -> int:
    if isinstance(cfg[key], bool) or not isinstance(cfg[key], int):
        raise ValueError(f"{key} must be an integer, got '{cfg[key]}'")
    return cfg[key]


def main(argv: list[str] | None = None) -> int:
    """`iqs data build-library [key=value ...]`: conf/library.yaml composed with the command line."""
    from omegaconf.errors import OmegaConfBaseException

    from iqs.core.config import compose

    cfg = compose("library", list(argv or []))
    try:
        if not isinstance(cfg.force, bool):
            raise ValueError(f"force must be true or false, got '{cfg.force}'")
        seed, crops, side = (_integer(cfg, key) for key in ("seed", "crops_per_photo", "long_side"))
        out, force = Path(str(cfg.out_dir)), cfg.force
        spec = LibrarySpec(crops_per_photo=crops, long_side=side)
    except (ValueError, TypeError, OmegaConfBaseException) as exc:
        print(f"iqs data build-library: {exc} (see `iqs data build-library --help`)", file=sys.stderr)
        return 2
    try:
        ensure_library(out, seed, spec, force=force)
    except DataError as exc:
        print(f"iqs data build-library: {exc}", file=sys.stderr)
        return 2
    m = read_manifest(out) or {}
    print(
        f"{out}: {m.get('photos')} photos in {len(ALBUMS) + 1} albums, {m.get('labelled')} labelled "
        f"{m.get('classes')}, {m.get('unlabelled')} unlabelled, {m.get('bursts')} bursts, "
        f"{len(m.get('bad_cases', []))} bad cases, {DATABASE} (schema {SCHEMA_VERSION}); built in {m.get('seconds')} s"
    )
    return 0
