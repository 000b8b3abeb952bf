"""Prepared-image cache: decode and resize every image of a mixture once, into memory-mapped shards.

Fine-tuning on full-size JPEGs (AVA: 255k photos) is bound by JPEG decoding, not by the model. `iqs data prepare`
decodes each image once, at reduced size through libjpeg's DCT scaling, resizes it to a short side
of `prepare.short_side` pixels and stores the uint8 RGB pixels in shards:

    <cache_dir>/prepared/<source>-<key>/shard-<i>-<hash>.bin   images back to back (raw uint8 pixels or JPEG)
    <cache_dir>/prepared/<source>-<key>/shard-<i>-<hash>.json  [{path, offset, h, w, format[, nbytes]} | {path, error}]

`prepare.format=jpeg` stores each image as JPEG bytes (`prepare.jpeg_quality`, default 95), about 7x smaller;
see iqs.data.shard_format.

A shard is written to a temp name and renamed, so an interrupted run resumes at the first missing shard, and a
corrupt image is recorded as an error row without stopping the run. The DataModule reads pixels through
`PreparedImages`, which memory-maps the shards (raw: no decode, no copy until a crop is taken; JPEG: one
libjpeg-turbo decode per read).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd
from rich.markup import escape

from iqs.data.prepared_folders import write_note
from iqs.data.shard_format import RAW, ShardFormat, decode, entry_nbytes

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from rich.console import Console

    from iqs.data.mixture import Mixture

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def decode_short_side(path: str | Path, short_side: int) -> np.ndarray:
    """RGB uint8 image with its short side resized to `short_side` (never upscaled), EXIF orientation applied.

    Decoding is `iqs predict`'s: JPEGs are reduced in the DCT domain (libjpeg-turbo scaling) while both
    sides stay >= short_side, so most of the decode cost is never paid.
    """
    from iqs.core.decode import load_rgb

    rgb = load_rgb(path, min_side=short_side)
    h, w = rgb.shape[:2]
    if min(h, w) > short_side:
        s = short_side / min(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def _shard_name(index: int, paths: Sequence[str], short_side: int, fmt: ShardFormat = RAW) -> str:
    key = "\n".join(paths) + f"|{short_side}|{FORMAT_VERSION}{fmt.key}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"shard-{index:05d}-{digest}"


def _write_shard(
    args: tuple[Path, str, list[str], list[str], int, ShardFormat],
) -> tuple[str, int, list[tuple[str, str]]]:
    out_dir, name, rel_paths, abs_paths, short_side, fmt = args
    entries: list[dict] = []
    errors: list[tuple[str, str]] = []
    tmp_bin = out_dir / f".{name}.bin.{os.getpid()}.tmp"
    offset = 0
    with open(tmp_bin, "wb") as fh:
        for rel, full in zip(rel_paths, abs_paths, strict=True):
            try:
                rgb = decode_short_side(full, short_side)
            except Exception as exc:  # one bad file never stops the run: it becomes an error row
                msg = f"{type(exc).__name__}: {exc}"
                entries.append({"path": rel, "error": msg})
                errors.append((full, msg))
                continue
            data, fields = fmt.encode(rgb)
            fh.write(data)
            entries.append(
                {"path": rel, "offset": offset, "h": int(rgb.shape[0]), "w": int(rgb.shape[1]), **fields}
            )
            offset += len(data)
    tmp_json = out_dir / f".{name}.json.{os.getpid()}.tmp"
    tmp_json.write_text(json.dumps(entries))
    # the .bin lands first: a shard counts as done only once its .json exists
    os.replace(tmp_bin, out_dir / f"{name}.bin")
    os.replace(tmp_json, out_dir / f"{name}.json")
    return name, len(rel_paths), errors


@dataclass
class PrepareReport:
    out_dir: Path
    images: int = 0
    shards_written: int = 0
    shards_reused: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)


def source_dir(
    cache_dir: str | Path, source: str, root: str | Path, short_side: int, fmt: ShardFormat = RAW
) -> Path:
    raw_key = f"{Path(root).resolve()}|{short_side}|{FORMAT_VERSION}{fmt.key}"
    key = hashlib.sha256(raw_key.encode()).hexdigest()[:10]
    return Path(cache_dir) / "prepared" / f"{source}-{key}"


def prepare_source(
    source: str,
    root: str | Path,
    rel_paths: Iterable[str],
    cache_dir: str | Path,
    *,
    short_side: int,  # no default here: conf/train.yaml's prepare.short_side is the one
    shard_size: int = 512,
    workers: int = 2,
    progress: bool = True,
    fmt: ShardFormat = RAW,
) -> PrepareReport:
    """Decode and resize the images of one source into shards; resumes where a previous run stopped."""
    rel = sorted(set(rel_paths))
    out_dir = source_dir(cache_dir, source, root, short_side, fmt)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_note(out_dir, source, root, short_side, fmt)
    report = PrepareReport(out_dir=out_dir, images=len(rel))
    jobs = []
    for i in range(0, len(rel), shard_size):
        chunk = rel[i : i + shard_size]
        name = _shard_name(i // shard_size, chunk, short_side, fmt)
        if (out_dir / f"{name}.json").exists():
            report.shards_reused += 1
            continue
        jobs.append((out_dir, name, chunk, [str(Path(root) / p) for p in chunk], short_side, fmt))
    if not jobs:
        return report
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(f"prepare {source}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar, ProcessPoolExecutor(max_workers=workers) as pool:
        task = bar.add_task("images", total=sum(len(j[2]) for j in jobs))
        for _name, n, errors in pool.map(_write_shard, jobs):
            report.shards_written += 1
            report.errors.extend(errors)
            for path, msg in errors:
                bar.console.print(
                    f"[yellow]unreadable image[/] {escape(f'{path}: {msg}')}", highlight=False, soft_wrap=True
                )
            bar.advance(task, n)
    return report


class PreparedImages:
    """Memory-mapped read access to a source's prepared shards: `get(rel_path) -> HxWx3 uint8` or None.

    Each image is decoded by the format its manifest row records (iqs.data.shard_format), so raw, JPEG and
    pre-JPEG shards all read alike.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self._index: dict[str, tuple[Path, dict]] = {}
        self.errors: dict[str, str] = {}
        for meta in sorted(self.out_dir.glob("shard-*.json")):
            bin_path = meta.with_suffix(".bin")
            for e in json.loads(meta.read_text()):
                if "error" in e:
                    self.errors[e["path"]] = e["error"]
                else:
                    self._index[e["path"]] = (bin_path, e)
        self._maps: dict[Path, np.memmap] = {}

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, rel_path: object) -> bool:
        return rel_path in self._index

    def paths(self) -> list[str]:
        """The relative paths this source's shards hold pixels for, sorted."""
        return sorted(self._index)

    def formats(self) -> set[str]:
        """The storage formats of this source's images (pre-JPEG shards count as raw)."""
        return {e.get("format", "raw") for _, e in self._index.values()}

    def encoded(self, rel_path: str) -> tuple[np.ndarray, dict] | None:
        """(the image's bytes in its shard, its manifest row), e.g. for a GPU JPEG decoder; None if absent."""
        hit = self._index.get(rel_path)
        if hit is None:
            return None
        bin_path, entry = hit
        mm = self._maps.get(bin_path)
        if mm is None:
            # opened lazily so a DataLoader worker maps shards after fork, not before
            mm = self._maps[bin_path] = np.memmap(bin_path, dtype=np.uint8, mode="r")
        offset = int(entry["offset"])
        return np.asarray(mm[offset : offset + entry_nbytes(entry)]), entry

    def get(self, rel_path: str) -> np.ndarray | None:
        hit = self.encoded(rel_path)
        return None if hit is None else decode(hit[1], hit[0])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state


def shard_errors(out_dir: str | Path, rel_paths: Iterable[str]) -> dict[str, str]:
    """{path: error} of the error rows among `rel_paths` in a source's shards, those written by this run
    and by earlier ones alike (a resumed prepare must report the failures of the shards it reuses)."""
    wanted = set(rel_paths)
    return {rel: msg for rel, msg in PreparedImages(out_dir).errors.items() if rel in wanted}


def forget_fixed_errors(out_dir: str | Path, root: str | Path) -> int:
    """Remove the shards with an error row whose file changed after the shard was written (replaced or
    repaired), so that the next prepare decodes them again; returns how many were removed."""
    removed = 0
    for meta in sorted(Path(out_dir).glob("shard-*.json")):
        written = meta.stat().st_mtime
        failed = [e["path"] for e in json.loads(meta.read_text()) if "error" in e]
        changed = [
            p for p in failed if (Path(root) / p).is_file() and (Path(root) / p).stat().st_mtime > written
        ]
        if changed:
            meta.unlink()  # first: without its .json a shard counts as not done, whatever else is left
            for part in Path(out_dir).glob(f"{meta.stem}.*"):
                part.unlink()
            removed += 1
    return removed


def main(argv: list[str]) -> int:
    """`iqs data prepare [key=value ...]`: prepare every source of the configured mixture.

    Exits 1 when any image is missing or could not be decoded (they are listed; training skips them under
    data.on_bad_image=skip), 2 on a bad config."""
    from rich.console import Console
    from rich.table import Table

    from iqs.core.config import compose
    from iqs.core.errors import DataError
    from iqs.data.mixture import ConfigError, build_mixture, ensure_data

    console = Console(stderr=True)
    cfg = compose("train", argv)
    p = cfg.prepare  # conf/train.yaml holds every prepare default; no fallbacks here
    short_side = int(p.short_side)
    try:
        fmt = ShardFormat.from_cfg(p)
    except ValueError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    try:
        ensure_data(cfg.data)
        mix = build_mixture(cfg.data, cfg.thresholds)
    except (DataError, ConfigError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    quality = f", quality {fmt.quality}" if fmt.name == "jpeg" else ""
    table = Table(title=f"prepared images (short side {short_side}, {fmt.name}{quality})")
    for col in ("source", "images", "missing", "shards written", "shards reused", "unreadable", "folder"):
        table.add_column(col)
    failed = []
    for name, rows in mix.table.groupby("dataset", sort=True):
        row, bad = _prepare_one(cfg, mix, str(name), rows, fmt, short_side, console)
        table.add_row(*row)
        failed.append(bad)
    Console().print(table)
    bad = pd.concat(failed, ignore_index=True)
    if bad.empty:
        return 0
    _report_failed(bad, cfg, mix, console)
    return 1


def _prepare_one(
    cfg: DictConfig,
    mix: Mixture,
    name: str,
    rows: pd.DataFrame,
    fmt: ShardFormat,
    short_side: int,
    console: Console,
) -> tuple[list[str], pd.DataFrame]:
    """Prepare one source's images: its row of the summary table and its missing or unreadable images."""
    from iqs.data.bad_images import COLUMNS, MISSING

    p = cfg.get("prepare", {})
    missing = set(mix.missing.get(name, []))
    if missing:
        example = escape(str(sorted(missing)[0]))
        console.print(
            f"[yellow]{name}: {len(missing)} image file(s) missing[/], e.g. {example}",
            highlight=False,
            soft_wrap=True,
        )
    rel = [r for r in rows["path"] if r not in missing]
    forget_fixed_errors(
        source_dir(cfg.paths.cache_dir, name, mix.roots[name], short_side, fmt), mix.roots[name]
    )
    rep = prepare_source(
        name,
        mix.roots[name],
        rel,
        cfg.paths.cache_dir,
        short_side=short_side,
        shard_size=int(p.shard_size),
        workers=int(p.workers or os.cpu_count() or 1),  # null: every core
        fmt=fmt,
    )
    errors = shard_errors(rep.out_dir, rel)
    reason = rows["path"].map(lambda r, e=errors, m=missing: MISSING if r in m else e.get(r))
    bad = rows[reason.notna()]
    files = mix.abs_paths(bad) if len(bad) else []
    row = (name, rep.images, len(missing), rep.shards_written, rep.shards_reused, len(errors), rep.out_dir)
    return [str(v) for v in row], bad.assign(reason=reason[reason.notna()], file=files)[COLUMNS]


def _report_failed(bad: pd.DataFrame, cfg: DictConfig, mix: Mixture, console: Console) -> None:
    """List the images that could not be prepared, on screen and in a CSV under outputs/prepare/."""
    from iqs.data.check import print_table, write_report

    print_table(bad, console, f"{len(bad)} image(s) missing or unreadable")
    csv_path, _ = write_report(
        bad, Path(str(cfg.paths.root_dir)) / "outputs" / "prepare" / f"{mix.name}-unreadable"
    )
    console.print(
        f"[red]{len(bad)} image(s) could not be prepared[/] (list: {escape(str(csv_path))}); the rest are in the shards. "
        "Replace or remove them and run prepare again (it redoes the shards of changed files), or leave them: "
        "training skips them under data.on_bad_image=skip, up to data.max_bad_fraction of each source.",
        highlight=False,
        soft_wrap=True,
    )
