"""`dataset=digikam_db`: pick labels and ratings read from digiKam's SQLite database (`digikam4.db`).

For photographers who keep labels only in the database. Schema and citations: `digikam_schema`; class
rules: `digikam_labels`. The database is opened READ-ONLY (`file:...?mode=ro` and `PRAGMA query_only`):
the pipeline never writes to a user's digiKam database. All reads happen in one transaction, so a running
digiKam cannot change the data half-way; when digiKam holds a write lock, SQLite retries for
`lock_timeout_s` seconds, then the error says to close digiKam (or to point at a copy of the file).

What is read, per image (`Images`, only status Visible and category Image; others are counted):
- its file: album root (`AlbumRoots.identifier` + `specificPath`) / `Albums.relativePath` / `Images.name`;
- its rating: `ImageInformation.rating` (0..5 stars; -1 is digiKam's NoRating, 0 stars is unrated too);
- its pick label: an `ImageTags` row pointing at one of the internal tags
  `_Digikam_Internal_Tags_/Pick Label None|Rejected|Pending|Accepted`;
- its capture time: `ImageInformation.creationDate` (digiKam's scanner fills it from DateTimeOriginal),
  else `Images.modificationDate` (the file time digiKam recorded).

Album roots are found as digiKam finds them: `digikam_roots`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from iqs.core.errors import DataError
from iqs.data.adapters.base import ADAPTERS
from iqs.data.adapters.digikam_labels import LabelReport, LabelRules, Photo, load_labels, rules_from_cfg
from iqs.data.adapters.digikam_roots import AlbumRoot, album_roots, root_map
from iqs.data.adapters.digikam_schema import (
    CATEGORY_IMAGE,
    INTERNAL_TAGS_ROOT,
    OLDEST_CHECKED_VERSION,
    PICK_LABEL_TAGS,
    SCHEMA_VERSION,
    STATUS_VISIBLE,
)
from iqs.data.adapters.reading import dataset_root, setting, stated
from iqs.data.bursts import parse_capture_time
from iqs.data.table import is_safe_relative

log = logging.getLogger("iqs.data.adapters")

# table -> columns this adapter reads (a database lacking one is not a digiKam core database we know)
REQUIRED = {
    "AlbumRoots": ("id", "label", "identifier", "specificPath"),
    "Albums": ("id", "albumRoot", "relativePath"),
    "Images": ("id", "album", "name", "status", "category", "modificationDate"),
    "ImageInformation": ("imageid", "rating", "creationDate"),
    "Tags": ("id", "pid", "name"),
    "ImageTags": ("imageid", "tagid"),
}


def open_readonly(path: Path, timeout_s: float) -> sqlite3.Connection:
    """A read-only connection: SQLite's `mode=ro` URI, plus `query_only` so no statement can write."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    con = sqlite3.connect(uri, uri=True, timeout=timeout_s)
    con.execute("PRAGMA query_only = ON")
    return con


def _locked(err: sqlite3.OperationalError) -> bool:
    return "locked" in str(err).lower() or "busy" in str(err).lower()


def _check_schema(con: sqlite3.Connection, db: Path) -> int | None:
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    version = None
    if "Settings" in tables:
        row = con.execute("SELECT value FROM Settings WHERE keyword='DBVersion'").fetchone()
        version = int(row[0]) if row and str(row[0]).isdigit() else None
    for table, columns in REQUIRED.items():
        if table not in tables:
            raise DataError(
                f"not a digiKam core database: table {table} is missing (DBVersion {version}). Point "
                "dataset.database at digikam4.db (Settings > Database in digiKam shows its folder).",
                file=db,
            )
        have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
        lacking = [c for c in columns if c not in have]
        if lacking:
            raise DataError(
                f"table {table} lacks column(s) {', '.join(lacking)} (DBVersion {version}); this adapter "
                f"knows digiKam core schemas {OLDEST_CHECKED_VERSION}..{SCHEMA_VERSION}.",
                file=db,
            )
    if version is None or not OLDEST_CHECKED_VERSION <= version <= SCHEMA_VERSION:
        log.warning(
            "%s: DBVersion %s: checked against digiKam core schemas %d..%d only; reading it anyway",
            db,
            version,
            OLDEST_CHECKED_VERSION,
            SCHEMA_VERSION,
        )
    return version


def _query(con: sqlite3.Connection) -> tuple[list, list, dict[int, list[int]]]:
    roots = con.execute("SELECT id, label, identifier, specificPath FROM AlbumRoots").fetchall()
    images = con.execute(
        "SELECT i.id, a.albumRoot, a.relativePath, i.name, i.status, i.category, i.modificationDate, "
        "ii.rating, ii.creationDate "
        "FROM Images i LEFT JOIN Albums a ON i.album = a.id "
        "LEFT JOIN ImageInformation ii ON ii.imageid = i.id ORDER BY i.id"
    ).fetchall()
    tags = con.execute(
        "SELECT t.id, t.name FROM Tags t JOIN Tags r ON t.pid = r.id WHERE r.name = ? AND r.pid = 0",
        (INTERNAL_TAGS_ROOT,),
    ).fetchall()
    pick_of_tag = {tid: v for tid, name in tags for v, tag in PICK_LABEL_TAGS.items() if name == tag}
    picks: dict[int, list[int]] = {}
    if pick_of_tag:
        marks = ",".join("?" * len(pick_of_tag))
        for image_id, tag_id in con.execute(
            f"SELECT imageid, tagid FROM ImageTags WHERE tagid IN ({marks})", list(pick_of_tag)
        ):
            picks.setdefault(int(image_id), []).append(pick_of_tag[tag_id])
    return roots, images, picks


OUTSIDE_ROOT = (
    "%s: %d images of album root %r (%s) lie outside dataset.root %s and are left out; set "
    "dataset.root to a folder holding every album root"
)


def read_database(cfg: Mapping) -> tuple[list[Photo], LabelReport, LabelRules]:
    """Every visible image of the database with its labels (unlabelled ones included)."""
    name = str(cfg.get("name") or "digikam_db")
    root = dataset_root(cfg).expanduser()
    db = root / Path(str(stated(cfg, "database"))).expanduser()
    if not db.is_file():
        raise DataError(
            f"digiKam database not found. Set {setting(cfg, 'database', '/path/to/digikam4.db')} (digiKam's "
            "Settings > Database shows its folder) and "
            f"{setting(cfg, 'root', '<a folder holding all your album roots>')}.",
            file=db,
        )
    rules = rules_from_cfg(cfg)
    mapping = root_map(cfg)
    roots_rows, images, picks = _snapshot(cfg, db)
    roots = album_roots(roots_rows, mapping)
    report = LabelReport(source=name, photos=0)
    # real paths on both sides: album roots resolve to real folders, and a dataset.root reached through a
    # symlink must still contain them
    root_abs = os.path.realpath(root)
    photos, outside = _photos(cfg, db, images, roots, picks, rules, report, root_abs)
    for rid, n in outside.items():
        r = roots[rid]
        log.warning(OUTSIDE_ROOT, name, n, r.label, r.path, root_abs)
    # a photo without any time cannot be placed in a burst: give it its own (an infinite gap)
    for i, p in enumerate(photos):
        if p.capture_time is None and p.file_time is None:
            p.file_time = -1e12 * (i + 1)
    for reason in ("not visible (hidden, trashed or obsolete)", "not an image"):
        if reason in report.skipped:
            log.info("%s: %d database images %s left out", name, len(report.skipped[reason]), reason)
    return photos, report, rules


def _snapshot(cfg: Mapping, db: Path) -> tuple[list, list, dict[int, list[int]]]:
    """Album roots, images and pick labels read in one transaction; lock and format errors as DataErrors."""
    timeout = float(stated(cfg, "lock_timeout_s"))
    try:
        con = open_readonly(db, timeout)
        try:
            con.execute("BEGIN")  # one read transaction: a consistent snapshot
            _check_schema(con, db)
            roots_rows, images, picks = _query(con)
            con.execute("COMMIT")
        finally:
            con.close()
    except sqlite3.OperationalError as err:
        if _locked(err):
            raise DataError(
                f"the database is locked by another program (a running digiKam writing to it) and stayed "
                f"locked for {timeout:g} s. Close digiKam or wait for its scan to finish and retry, raise "
                f"{setting(cfg, 'lock_timeout_s', '30')}, or copy the file and point dataset.database at the copy.",
                file=db,
            ) from None
        raise DataError(f"cannot read the digiKam database: {err}", file=db) from None
    except sqlite3.DatabaseError as err:
        raise DataError(f"not a readable SQLite database: {err}", file=db) from None
    return roots_rows, images, picks


def _photos(
    cfg: Mapping,
    db: Path,
    images: list,
    roots: dict[int, AlbumRoot],
    picks: dict[int, list[int]],
    rules: LabelRules,
    report: LabelReport,
    root_abs: str,
) -> tuple[list[Photo], dict[int, int]]:
    """The visible images as Photos (paths relative to the root), and per album root how many lie outside
    it; the report counts the photos and every image left out, with its reason."""
    photos: list[Photo] = []
    outside: dict[int, int] = {}
    for image_id, root_id, rel_path, file_name, status, category, mtime, rating, created in images:
        if status != STATUS_VISIBLE or category != CATEGORY_IMAGE:
            key = "not visible (hidden, trashed or obsolete)" if status != STATUS_VISIBLE else "not an image"
            report.skipped.setdefault(key, []).append(f"image id {image_id} ({file_name})")
            continue
        report.photos += 1
        album_root = roots.get(root_id)
        if album_root is None or album_root.path is None or not album_root.path.is_dir():
            _missing_root(cfg, db, album_root, root_id)
        real_root = os.path.realpath(album_root.path)
        absolute = os.path.normpath(os.path.join(real_root, str(rel_path or "/").lstrip("/"), str(file_name)))
        rel = os.path.relpath(absolute, root_abs).replace(os.sep, "/")
        if not is_safe_relative(rel):
            outside[root_id] = outside.get(root_id, 0) + 1
            report.skipped.setdefault("outside dataset.root", []).append(str(absolute))
            continue
        pick_values = sorted(set(picks.get(int(image_id), []))) if rules.uses_pick else []
        if len(pick_values) > 1:
            report.skip("several pick labels", rel, f"image id {image_id} has pick-label tags {pick_values}")
            continue
        stars = None if rating is None or int(rating) == -1 or not rules.uses_rating else float(rating)
        if stars is not None and rules.check_rating(stars):
            report.skip(
                "rating out of range", rel, f"ImageInformation.rating={rating} for image id {image_id}"
            )
            continue
        photos.append(
            Photo(
                path=rel,
                pick=pick_values[0] if pick_values else None,
                stars=stars,
                capture_time=parse_capture_time(created),
                file_time=parse_capture_time(mtime),
                origin="database",
            )
        )
    return photos, outside


def _missing_root(cfg: Mapping, db: Path, album_root: AlbumRoot | None, root_id: int) -> None:
    if album_root is None:
        raise DataError(
            f"an image refers to album root id {root_id}, which AlbumRoots does not hold", file=db
        )
    where = (
        f"resolves to {album_root.path}, which is not a folder here"
        if album_root.path is not None
        else "cannot be located on this machine (volume not mounted?)"
    )
    key = str(album_root.path) if album_root.path is not None else (album_root.label or str(album_root.id))
    raise DataError(
        f"album root {album_root.label!r} (id {album_root.id}, identifier {album_root.identifier!r}, "
        f"specificPath {album_root.specific_path!r}) {where}. If it moved, map it to its new folder: "
        f"{setting(cfg, 'root_map', '{' + repr(key) + ': /new/path}')}",
        file=db,
    )


@ADAPTERS.register("digikam_db")
def load(cfg: Mapping) -> pd.DataFrame:
    return load_labels(cfg, read_database)
