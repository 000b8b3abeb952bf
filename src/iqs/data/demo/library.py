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
import shutil
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import numpy as np

from iqs.data.adapters.digikam_schema import SCHEMA_VERSION
from iqs.data.demo.build import read_record
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
    return read_record(Path(out_dir) / MANIFEST)


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
