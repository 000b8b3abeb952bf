"""Unreadable images: find them once, then skip or refuse them; never crash a run on image 9,000.

`iqs data check` (iqs.data.check) lists them; training drops them under a `BadImagePolicy`.

An image is readable when `iqs.core.decode.load_rgb` decodes it: the one decode path that training,
`iqs data prepare` and `iqs predict` all use, so a file passes here exactly when it would pass there.
Missing, zero-byte, truncated and not-an-image files are all "unreadable", with the decoder's reason.

Training (`QualityDataModule` with a `BadImagePolicy`) runs the same check before it starts, so a bad file
drops out of every split before any feature is embedded or any metric is computed: it is never scored.
Results are kept per file in `<cache_dir>/checks/<source>-<key>.json` as {path: [size, mtime_ns, reason]},
so a later run decodes only files that are new or changed and merely stats the rest; `iqs data check`
decodes everything again and refreshes that record. Images already in `iqs data prepare` shards count as
readable (they were decoded then); the shards' error rows are unreadable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from iqs.core.decode import DecodeError, load_rgb  # imported before the pool forks: workers inherit it
from iqs.core.errors import DataError

log = logging.getLogger(__name__)

ON_BAD_IMAGE = ("skip", "fail")
MISSING = "missing: no such file"
# the columns of a bad-image list (the run's data/skipped_images.csv, `iqs data check`'s report)
COLUMNS = ["dataset", "image_id", "split", "path", "file", "reason"]
QUOTE = 10  # files named in an error message; the full list goes to the report or artifact
_INLINE_BELOW = 64  # fewer files than this are decoded in-process: a pool would cost more than it saves


def unreadable_reason(path: str | Path) -> str | None:
    """None when `load_rgb` decodes the file, else why not ("truncated: Premature end of JPEG file")."""
    try:
        load_rgb(path)
    except DecodeError as err:
        return f"{err.kind}: {err.detail}"
    except Exception as err:  # a decoder bug is this file's problem: it must not end the check
        return f"error: {type(err).__name__}: {err}"
    return None


def read_image(path: str | Path) -> Any:
    """`load_rgb` for training, whose check passed this file: a failure now means it changed during the
    run, reported as a DataError naming the file rather than a decoder traceback from a loader worker."""
    try:
        return load_rgb(path)
    except DecodeError as err:
        raise DataError(
            f"{err.kind}: {err.detail}. The image became unreadable after the run's check (changed or "
            "removed during the run?); `iqs data check` lists the unreadable images",
            file=path,
        ) from None


def decode_all(
    files: Sequence[str], *, workers: int | None = None, progress: bool = True, description: str = "check"
) -> list[str | None]:
    """`unreadable_reason` of every file, in order, over a process pool with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    workers = max(1, int(workers or os.cpu_count() or 1))
    columns = (
        TextColumn(f"decoding {description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    out: list[str | None] = []
    with Progress(*columns, disable=not progress, console=_stderr()) as bar:
        task = bar.add_task("images", total=len(files))
        if len(files) < _INLINE_BELOW or workers == 1:
            for f in files:
                out.append(unreadable_reason(f))
                bar.advance(task)
            return out
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for reason in pool.map(unreadable_reason, files, chunksize=16):
                out.append(reason)
                bar.advance(task)
    return out


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _record_path(cache_dir: str | Path, source: str, root: str | Path) -> Path:
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:10]
    return Path(cache_dir) / "checks" / f"{source}-{key}.json"


def _read_record(path: Path) -> dict[str, list]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or torn by a crash before the atomic write: decode again
        return {}


def _write_record(path: Path, record: Mapping[str, list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # temp file + rename: concurrent jobs each leave a whole record, and the last one wins
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
    os.replace(tmp, path)


@dataclass
class _Plan:
    """One source's check before decoding: verdicts known already, and the files left to decode."""

    root: Path
    record_file: Path | None
    record: dict[str, list]
    bad: dict[str, str] = field(default_factory=dict)
    todo: list[tuple[str, list]] = field(default_factory=list)  # (relative path, [size, mtime_ns])


def _plan(source: str, root: str | Path, rel_paths: Sequence[str], cache_dir: Any, fresh: bool) -> _Plan:
    record_file = _record_path(cache_dir, source, root) if cache_dir is not None else None
    plan = _Plan(Path(root), record_file, {} if record_file is None or fresh else _read_record(record_file))
    for rel in dict.fromkeys(rel_paths):
        try:
            st = os.stat(plan.root / rel)
        except FileNotFoundError:
            plan.bad[rel] = MISSING
            continue
        except OSError as err:
            plan.bad[rel] = f"unreadable: {err}"
            continue
        stamp = [st.st_size, st.st_mtime_ns]
        hit = plan.record.get(rel)
        if hit is not None and hit[:2] == stamp:
            if hit[2] is not None:
                plan.bad[rel] = hit[2]
        else:
            plan.todo.append((rel, stamp))
    return plan


def check_sources(
    sources: Sequence[tuple[str, str | Path, Sequence[str]]],
    *,
    cache_dir: str | Path | None = None,
    fresh: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict[str, str]]:
    """{relative path: reason} of the unreadable images of each (source, root, relative paths). Missing
    files are stat'ed, never recorded; the others are decoded (one pool for all sources) unless `cache_dir`
    has a result for the same size and mtime and not `fresh`."""
    plans = [_plan(name, root, rel, cache_dir, fresh) for name, root, rel in sources]
    files = [str(p.root / rel) for p in plans for rel, _ in p.todo]
    names = ", ".join(name for (name, _, _), p in zip(sources, plans, strict=True) if p.todo)
    reasons = iter(decode_all(files, workers=workers, progress=progress, description=names) if files else [])
    for plan in plans:
        for rel, stamp in plan.todo:
            reason = next(reasons)
            plan.record[rel] = [*stamp, reason]
            if reason is not None:
                plan.bad[rel] = reason
        if plan.todo and plan.record_file is not None:
            _write_record(plan.record_file, plan.record)
    return [plan.bad for plan in plans]


def check_source(source: str, root: str | Path, rel_paths: Sequence[str], **kw: Any) -> dict[str, str]:
    """`check_sources` for one source."""
    return check_sources([(source, root, rel_paths)], **kw)[0]


def find_bad_images(
    table: pd.DataFrame,
    files: Sequence[str],
    roots: Mapping[str, str | Path],
    *,
    prepared: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    fresh: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """The unreadable rows of `table` (a mixture table; `files` its absolute paths), indexed like `table`,
    with COLUMNS. `prepared`: {source: PreparedImages}; rows in a source's shards are not decoded again."""
    todo, verdicts = [], []
    for source, rows in table.groupby("dataset", sort=False):
        shards = (prepared or {}).get(str(source))
        rel = rows["path"].astype(str)
        if shards is not None:  # decoded by `iqs data prepare` already: its error rows are the verdict
            reason = rel.map(lambda r, s=shards: s.errors.get(r)).astype(object)
            unchecked = ~rel.map(lambda r, s=shards: r in s or r in s.errors).astype(bool)
        else:
            reason = pd.Series(None, index=rows.index, dtype=object)
            unchecked = pd.Series(True, index=rows.index)
        todo.append((str(source), roots[str(source)], rel[unchecked].tolist()))
        verdicts.append((rows, rel, reason, unchecked))
    found = check_sources(todo, cache_dir=cache_dir, fresh=fresh, workers=workers, progress=progress)
    parts = []
    for (rows, rel, reason, unchecked), bad_rel in zip(verdicts, found, strict=True):
        reason[unchecked] = rel[unchecked].map(bad_rel)
        parts.append(rows.loc[reason.notna()].assign(reason=reason[reason.notna()]))
    bad = pd.concat(parts) if parts else table.iloc[:0].assign(reason=pd.Series(dtype=object))
    positions = table.index.get_indexer(bad.index)
    return bad.assign(file=[str(files[i]) for i in positions])[COLUMNS]


def missing_files(table: pd.DataFrame, files: Sequence[str]) -> pd.DataFrame:
    """The rows of `table` whose file does not exist (no decoding), with COLUMNS."""
    present = [os.path.isfile(f) for f in files]
    gone = table.loc[[not p for p in present]]
    return gone.assign(file=[f for f, p in zip(files, present, strict=True) if not p], reason=MISSING)[
        COLUMNS
    ]


def describe(bad: pd.DataFrame, limit: int = QUOTE) -> str:
    """`file (reason); ...` for an error message: the first `limit` rows, then how many more."""
    shown = "; ".join(f"{r.file} ({r.reason})" for r in bad.head(limit).itertuples())
    return shown + (f"; ... and {len(bad) - limit} more" if len(bad) > limit else "")


@dataclass(frozen=True)
class BadImagePolicy:
    """What training does with unreadable images (conf/data/bad_images/default.yaml sets the first two)."""

    on_bad_image: str  # skip | fail
    max_bad_fraction: float  # per source; beyond it even `skip` fails the run
    cache_dir: Path | None = None  # where per-file check results are kept (None: decode every run)
    workers: int | None = None  # decode processes (None: one per core)

    def __post_init__(self) -> None:
        from iqs.data.mixture import ConfigError

        if self.on_bad_image not in ON_BAD_IMAGE:
            raise ConfigError(f"data.on_bad_image must be skip or fail, got {self.on_bad_image!r}")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ConfigError(f"data.max_bad_fraction must lie in [0, 1], got {self.max_bad_fraction!r}")

    @classmethod
    def from_cfg(cls, cfg: Any) -> BadImagePolicy:
        """From a composed train config: `data.on_bad_image`, `data.max_bad_fraction`, `paths.cache_dir`,
        `prepare.workers`. The data keys are required: their one default lives in the yaml."""
        from iqs.data.mixture import ConfigError

        workers = (cfg.get("prepare") or {}).get("workers")
        absent = [k for k in ("on_bad_image", "max_bad_fraction") if cfg.data.get(k) is None]
        if absent:
            raise ConfigError(
                f"data ({cfg.data.get('name')}): no {' or '.join(absent)}. Add `- bad_images@_here_: default` "
                "before `_self_` in the mixture's defaults list, as conf/data/demo.yaml does"
            )
        return cls(
            on_bad_image=str(cfg.data.on_bad_image),
            max_bad_fraction=float(cfg.data.max_bad_fraction),
            cache_dir=Path(str(cfg.paths.cache_dir)),
            workers=int(workers) if workers else None,
        )

    def enforce(self, bad: pd.DataFrame, totals: Mapping[str, int]) -> None:
        """Raise DataError when `bad` (rows of a table with `totals` rows per source) is beyond the policy."""
        if bad.empty:
            return
        hint = "`iqs data check data=<this mixture>` lists every unreadable image with its reason"
        if self.on_bad_image == "fail":
            raise DataError(
                f"{len(bad)} unreadable image(s) and data.on_bad_image=fail: {describe(bad)}. Replace or "
                f"remove them, or let training skip them with data.on_bad_image=skip. {hint}."
            )
        for source, n in bad.groupby("dataset").size().items():
            share = n / max(1, int(totals[source]))
            if share > self.max_bad_fraction:
                raise DataError(
                    f"source {source}: {n} of {totals[source]} images are unreadable ({share:.1%}, more than "
                    f"data.max_bad_fraction={self.max_bad_fraction:g}): "
                    f"{describe(bad[bad['dataset'] == source])}. Is the dataset root right and fully "
                    f"downloaded? {hint}; raise data.max_bad_fraction to train without them."
                )
        log.warning(
            "skipping %d unreadable image(s) (data.on_bad_image=skip): %s", len(bad), describe(bad, 3)
        )


def log_skipped(run: Any, skipped: pd.DataFrame, sources: Iterable[str]) -> None:
    """Metric `data/<source>/skipped` for every source (0 included) and the list as `data/skipped_images.csv`."""
    counts = skipped["dataset"].value_counts()
    run.log_metrics({f"data/{s}/skipped": int(counts.get(s, 0)) for s in sources})
    if len(skipped):
        run.log_text(skipped.to_csv(index=False), "data/skipped_images.csv")
