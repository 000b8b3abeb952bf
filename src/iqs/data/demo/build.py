"""Build the demo dataset: reference crops -> distorted images -> rater votes -> official-format files.

`ensure_demo` is what the rest of the project calls: it builds once per (version, seed, spec), into a
temporary folder beside the target that is renamed into place, under a file lock, so a crash or two
processes starting together never leave a half-written dataset behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from iqs.core.errors import DataError
from iqs.core.registry import Registry
from iqs.core.scale import std_to_common, to_common
from iqs.data.demo import writers
from iqs.data.demo.distortions import DISTORTIONS, HIGH_QUALITY
from iqs.data.demo.references import PHOTOS, Reference, make_references
from iqs.data.demo.scoring import (
    PANELS,
    Item,
    Votes,
    latent_quality,
    plan_items,
    shape_means,
    simulate_votes,
    spaq_attributes,
)

# bump whenever a change alters the files, so existing builds are rebuilt on next use
# (4: the split group is the source photograph, not the crop: crops of one photo overlap)
DEMO_VERSION = 4
BUILD_FILE = "BUILD.json"
META_FILE = "distortions.csv"  # per image: source, id, reference crop, distortion, level (for analysis)

# source -> (annotation file, image folder, native range); the folders follow the official archives
LAYOUT: dict[str, tuple[str, str, tuple[float, float]]] = {
    "ava": (writers.AVA_FILE, "images", (1.0, 10.0)),
    "koniq": (writers.KONIQ_FILE, "1024x768", (1.0, 5.0)),
    "spaq": (writers.SPAQ_FILE, "TestImage", (0.0, 100.0)),
}


@dataclass(frozen=True)
class DemoSpec:
    """Size knobs. The defaults give 15 photos x 4 crops = 60 references and 1,800 images."""

    crops_per_photo: int = 4
    long_side: int = 288
    types_per_source: int = 3  # distortion types per reference in each source (of 9)
    levels_per_type: int = 3  # levels per type and reference (of 5)
    photos: tuple[str, ...] | None = None  # a subset of references.PHOTOS (tests)

    def __post_init__(self) -> None:
        if self.photos is not None:
            unknown = sorted(set(self.photos) - set(PHOTOS))
            if unknown:
                raise ValueError(f"unknown demo photos {unknown}; known: {', '.join(PHOTOS)}")
        if not 1 <= self.levels_per_type <= 5:
            raise ValueError(f"levels_per_type must be in 1..5, got {self.levels_per_type}")
        if not 1 <= self.types_per_source <= len(DISTORTIONS):
            raise ValueError(
                f"types_per_source must be in 1..{len(DISTORTIONS)}, got {self.types_per_source}"
            )
        if not 32 <= self.long_side <= 384:
            raise ValueError(f"long_side must be in 32..384, got {self.long_side}")

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["photos"] = list(self.photos) if self.photos is not None else None
        return d


def _render(ref: Reference, ref_index: int, item: Item, seed: int) -> bytes:
    if item.level == 0:
        return writers.encode_jpeg(ref.rgb, HIGH_QUALITY)
    d = DISTORTIONS.get(item.distortion)
    # seeded by what the image is, not by build order: the same (crop, distortion, level) gives the
    # same pixels in every source
    rng = np.random.default_rng([seed, 2, ref_index, DISTORTIONS.names().index(item.distortion), item.level])
    return writers.encode_jpeg(d(ref.rgb, item.level, rng), d.quality(item.level))


def _image_ids(source: str, n: int, rng: np.random.Generator) -> list[str]:
    if source == "ava":  # integer ids, above the real AVA range (<= ~960k) so they cannot collide
        return [str(v) for v in rng.choice(np.arange(9_000_000, 10_000_000), n, replace=False)]
    if source == "koniq":  # KonIQ names are Flickr-like 10-digit numbers
        draws = rng.integers(1_000_000_000, 10_000_000_000, 2 * n + 16)
        _, first = np.unique(draws, return_index=True)
        return [f"{v}.jpg" for v in draws[np.sort(first)][:n]]
    return [f"{i:05d}.jpg" for i in range(1, n + 1)]  # SPAQ numbers its photos


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Rated:
    """One source's images and their simulated votes, what its annotation writer puts in the file."""

    ids: list[str]
    names: list[str]  # file names under the image folder
    counts: np.ndarray  # (N, levels) vote counts
    mos: np.ndarray  # (N,) mean vote
    votes: Votes
    items: list[Item]
    rng: np.random.Generator


# source -> writer of its official annotation file; returns the MOS as the file states it
ANNOTATION_WRITERS: Registry[Callable[[Path, Rated], np.ndarray]] = Registry("demo annotation format")


@ANNOTATION_WRITERS.register("ava")
def _ava_annotations(path: Path, r: Rated) -> np.ndarray:
    n = len(r.ids)
    tags = r.rng.integers(0, 67, (n, 2))  # 66 semantic tags, 0 = no tag
    challenges = r.rng.integers(1, 1400, n)
    writers.write_ava(path, [int(i) for i in r.ids], r.counts, tags, challenges)
    return r.mos


@ANNOTATION_WRITERS.register("koniq")
def _koniq_annotations(path: Path, r: Rated) -> np.ndarray:
    n = len(r.ids)
    z = r.votes.zscore_mean(n)
    zscore = 100.0 * (z - z.min()) / (z.max() - z.min())  # rescaled to 0..100 as in KonIQ-10k
    order = np.argsort(r.ids)  # the official file is sorted by name
    sd = r.votes.image_sd(n)
    writers.write_koniq(
        path, [r.ids[i] for i in order], r.counts[order], r.mos[order], sd[order], zscore[order]
    )
    return r.mos


@ANNOTATION_WRITERS.register("spaq")
def _spaq_annotations(path: Path, r: Rated) -> np.ndarray:
    mos = np.round(r.mos, 2)  # SPAQ publishes two decimals
    writers.write_spaq(path, r.names, mos, spaq_attributes(r.items, mos, r.rng))
    return mos


def _meta(ref: Reference, item: Item, latent: float) -> dict:
    """How one demo image was made: its reference crop, distortion, level and latent quality."""
    d = DISTORTIONS.get(item.distortion) if item.level else None
    return {
        "reference": ref.name,
        "photo": ref.photo,
        "crop_xywh": " ".join(map(str, ref.box)),
        "distortion": item.distortion,
        "level": item.level,
        "parameter": d.params[item.level - 1] if d else "",
        "jpeg_quality": d.quality(item.level) if d else HIGH_QUALITY,
        "latent_quality": f"{latent:.6f}",
    }


def _write_source(
    source: str,
    root: Path,
    items: list[Item],
    refs: list[Reference],
    seed: int,
    tick: Callable[[], None],
) -> tuple[dict, list[dict]]:
    """Write one source's images, annotation file and groups.csv; return its summary and metadata rows."""
    annotations, image_dir, (lo, hi) = LAYOUT[source]
    panel = PANELS[source]
    rng = np.random.default_rng([seed, 5, list(LAYOUT).index(source)])
    (root / image_dir).mkdir(parents=True)
    n = len(items)
    latent = latent_quality(items, len(refs), seed)
    votes = simulate_votes(shape_means(latent, panel), panel, rng)
    counts = votes.counts(n, panel.vote_levels)
    mos = votes.image_mean(n)
    ids = _image_ids(source, n, rng)
    names = ids if source != "ava" else [f"{i}.jpg" for i in ids]

    mos = ANNOTATION_WRITERS.get(source)(
        root / annotations, Rated(ids, names, counts, mos, votes, items, rng)
    )

    # the group is the photograph, not the crop: crops of one photograph overlap (up to 30% IoU) and
    # share its content, so they must all land in one split
    groups = [f"demo:{refs[it.ref].photo}" for it in items]
    writers.write_groups(root / writers.GROUPS_FILE, ids, groups)

    meta = []
    for item, image_id, name, q in zip(items, ids, names, latent, strict=True):
        ref = refs[item.ref]
        (root / image_dir / name).write_bytes(_render(ref, item.ref, item, seed))
        meta.append(
            {"source": source, "image_id": image_id, "path": f"{image_dir}/{name}", **_meta(ref, item, q)}
        )
        tick()

    common = to_common(mos, lo, hi)
    sd_common = std_to_common(votes.image_sd(n), lo, hi)
    summary = {
        "images": n,
        "annotations": annotations,
        "images_dir": image_dir,
        "native_range": [lo, hi],
        "native_mean": float(mos.mean()),
        "native_sd": float(mos.std(ddof=1)),
        "common_mean": float(common.mean()),
        "common_sd": float(common.std(ddof=1)),
        "vote_sd_common": float(sd_common.mean()),
        "votes_per_image": float(counts.sum(axis=1).mean()),
        "sha256": {
            annotations: _sha256(root / annotations),
            writers.GROUPS_FILE: _sha256(root / writers.GROUPS_FILE),
        },
    }
    return summary, meta


def build_demo(out_dir: Path, seed: int = 0, spec: DemoSpec | None = None, progress: bool = True) -> dict:
    """Build the demo into `out_dir` (created; must not exist or be empty) and return the BUILD record."""
    import pandas as pd

    spec = spec or DemoSpec()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir}: the demo is built into an empty folder (use ensure_demo to rebuild)"
        )
    start = time.perf_counter()
    refs = make_references(
        seed, spec.crops_per_photo, spec.long_side, list(spec.photos) if spec.photos else None
    )
    plan = plan_items(len(refs), tuple(LAYOUT), seed, spec.types_per_source, spec.levels_per_type)
    total = sum(len(v) for v in plan.values())

    columns = [TextColumn("demo dataset"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    summaries: dict[str, dict] = {}
    meta: list[dict] = []
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("build", total=total)
        for source, items in plan.items():
            summaries[source], rows = _write_source(
                source, out_dir / source, items, refs, seed, lambda: bar.advance(task)
            )
            meta.extend(rows)
    pd.DataFrame(meta).to_csv(out_dir / META_FILE, index=False, lineterminator="\n")

    record = {
        "version": DEMO_VERSION,
        "seed": seed,
        "spec": spec.as_dict(),
        "photos": {p: PHOTOS[p][1] for p in sorted({r.photo for r in refs})},
        "references": len(refs),
        "images": total,
        "distortions": DISTORTIONS.names(),
        "sources": summaries,
        "seconds": round(time.perf_counter() - start, 2),
        "note": "synthetic stand-in for a real image quality dataset: real photographs, simulated raters",
    }
    (out_dir / BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def read_record(path: Path) -> dict | None:
    """A build record (the demo's BUILD file, the test library's manifest); None if absent or unreadable,
    which the callers treat as "not built yet"."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def check_replaceable(out_dir: Path, marker: str, command: str) -> None:
    """Raise DataError unless `out_dir` is absent, empty or a previous build (it holds `marker`): a rebuild
    deletes the folder, and `out_dir=~/Pictures` must never delete someone's photographs."""
    if not out_dir.exists() or (
        out_dir.is_dir() and ((out_dir / marker).is_file() or not any(out_dir.iterdir()))
    ):
        return
    raise DataError(
        f"not empty and not a previous build (no {marker}), so it is left alone; "
        f"give `{command}` a new or empty out_dir, or force=true to replace the folder and everything in it",
        file=out_dir,
    )


def read_build(out_dir: Path) -> dict | None:
    return read_record(Path(out_dir) / BUILD_FILE)


def is_current(out_dir: Path, seed: int, spec: DemoSpec) -> bool:
    rec = read_build(out_dir)
    return rec is not None and (rec.get("version"), rec.get("seed"), rec.get("spec")) == (
        DEMO_VERSION,
        seed,
        spec.as_dict(),
    )


def ensure_demo(
    out_dir: Path, seed: int = 0, *, spec: DemoSpec | None = None, force: bool = False, progress: bool = True
) -> Path:
    """Build the demo into `out_dir` unless a build of this version, seed and spec is already there.

    Raises DataError, touching nothing, when `out_dir` holds files but no BUILD.json and force is false."""
    out_dir = Path(out_dir).resolve()
    spec = spec or DemoSpec()
    if not force and is_current(out_dir, seed, spec):
        return out_dir
    if not force:
        check_replaceable(out_dir, BUILD_FILE, "iqs data build-demo")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir.parent / f".{out_dir.name}.lock")):
        if not force and is_current(out_dir, seed, spec):  # another process built it while we waited
            return out_dir
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-build-", dir=out_dir.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is shared like any data folder
        try:
            build_demo(tmp, seed, spec, progress=progress)
            if out_dir.exists():
                old = out_dir.parent / f".{out_dir.name}-old-{os.getpid()}"
                out_dir.rename(old)
                tmp.rename(out_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(out_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
