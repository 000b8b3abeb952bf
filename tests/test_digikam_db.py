"""dataset=digikam_db: labels from digikam4.db (digiKam's schema), read-only, moved roots, locks."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from pathlib import Path

import pytest
from tests.conftest import digikam_cfg
from tests.conftest import labels_by_path as labels

from iqs.core.errors import DataError
from iqs.data.adapters import load_source
from iqs.data.adapters.digikam_db import open_readonly
from iqs.data.adapters.digikam_roots import resolve_identifier
from iqs.data.adapters.digikam_schema import CORE_SCHEMA
from iqs.data.demo.library import (
    DATABASE,
    Frame,
    LibrarySpec,
    build_library,
    read_manifest,
    write_database,
)


def cfg(root: Path, name: str = "digikam_db", **overrides):
    return digikam_cfg(root, name, **overrides)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_database_labels_match_the_library(library, caplog):
    db = library / DATABASE
    before = (_digest(db), db.stat().st_mtime_ns)
    with caplog.at_level(logging.INFO, logger="iqs.data.adapters"):
        source = load_source(cfg(library))
    table = source.table
    frames = read_manifest(library)["frames"]
    # in the database an XMP "-1 = rejected" rating is digiKam's NoRating: those photos are unlabelled there
    expected = {
        f["path"]: f["cls"]
        for f in frames
        if f["cls"] is not None and not (f["storage"] == "rating_only" and f["stars"] == -1)
    }
    assert labels(table) == expected
    assert source.missing == []
    report = table.attrs["digikam_report"]
    assert report["skipped"] == {"rating out of range": 1, "not visible (hidden, trashed or obsolete)": 1}
    assert "Unsorted/rating_seven.jpg" in caplog.text
    # the same photos get the same labels from the XMP adapter (rules shared, stores independent)
    xmp = labels(load_source(cfg(library, "digikam_xmp")).table)
    assert {p: xmp[p] for p in expected} == expected
    assert (_digest(db), db.stat().st_mtime_ns) == before  # never written
    assert not list(library.glob(DATABASE + "-*"))  # no journal or WAL left behind


def test_schema_10_database_reads_the_same(library, tmp_path, caplog):
    """digiKam 6.3's core schema (version 10) gives the same labels as version 16."""
    m = read_manifest(library)
    frames = [Frame(**f) for f in m["frames"]]
    write_database(library, frames, m["bad_cases"], tmp_path / DATABASE, schema_version=10)
    con = sqlite3.connect(tmp_path / DATABASE)
    columns = {r[1] for r in con.execute("PRAGMA table_info(AlbumRoots)")}
    con.close()
    assert "caseSensitivity" not in columns  # really the older schema
    with caplog.at_level(logging.WARNING, logger="iqs.data.adapters"):
        old = load_source(cfg(library, database=str(tmp_path / DATABASE))).table
    assert "DBVersion" not in caplog.text
    assert labels(old) == labels(load_source(cfg(library)).table)


def test_connection_is_read_only(library):
    con = open_readonly(library / DATABASE, 1.0)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            con.execute("INSERT INTO Settings (keyword, value) VALUES ('iqs', 'was here')")
    finally:
        con.close()


def test_locked_by_a_running_digikam(library):
    holder = sqlite3.connect(library / DATABASE, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # what digiKam holds while it commits a scan
    try:
        start = time.perf_counter()
        with pytest.raises(DataError, match=r"digikam4.db: the database is locked .*Close digiKam"):
            load_source(cfg(library, lock_timeout_s=0.3))
        assert time.perf_counter() - start >= 0.3  # it retried before giving up
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_moved_album_root_needs_root_map(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    build_library(old, seed=2, spec=LibrarySpec(crops_per_photo=2, long_side=64, photos=("coffee", "camera")))
    old.rename(new)
    with pytest.raises(DataError, match=rf"resolves to {old}, which is not a folder here.*root_map"):
        load_source(cfg(new))
    moved = load_source(cfg(new, root_map={str(old): str(new)})).table
    by_label = load_source(cfg(new, root_map={"Pictures": str(new)})).table
    assert len(moved) >= 3 and labels(moved) == labels(by_label)
    xmp = labels(load_source(cfg(new, "digikam_xmp")).table)
    assert all(xmp[p] == c for p, c in labels(moved).items())


def test_album_root_outside_dataset_root_is_left_out(library, tmp_path, caplog):
    (tmp_path / DATABASE).write_bytes((library / DATABASE).read_bytes())
    with caplog.at_level(logging.WARNING, logger="iqs.data.adapters"):
        table = load_source(cfg(tmp_path)).table
    assert len(table) == 0
    assert "outside dataset.root" in caplog.text and "'Pictures'" in caplog.text


def test_dataset_root_through_a_symlink_reads_the_same(library, tmp_path):
    """Album roots are real paths; a dataset.root reached through a symlink still holds them."""
    link = tmp_path / "photos-link"
    link.symlink_to(library, target_is_directory=True)
    direct, through = load_source(cfg(library)).table, load_source(cfg(link)).table
    assert len(through) > 0 and labels(through) == labels(direct)
    assert not through.attrs["digikam_report"]["skipped"].get("outside dataset.root")


@pytest.mark.parametrize(
    ("identifier", "specific", "expected"),
    [
        ("volumeid:?path=/home/ann/Pictures", "/", "/home/ann/Pictures"),  # specificPath ignored
        ("volumeid:?path=/data/My%20Photos", "/", "/data/My Photos"),
        ("volumeid:?mountpath=/mnt/disk", "/photos/2024", "/mnt/disk/photos/2024"),
        ("networkshareid:?mountpath=/mnt/nas", "/", "/mnt/nas"),
        ("volumeid:?uuid=00000000-dead-beef-0000-000000000000", "/x", None),  # volume not here
        ("file:///tmp", "/", None),
    ],
)
def test_album_root_identifiers(identifier, specific, expected):
    assert resolve_identifier(identifier, specific) == expected


def _database(path: Path, schema: str, version: str) -> Path:
    con = sqlite3.connect(path)
    con.executescript(schema)
    con.execute("INSERT INTO Settings VALUES ('DBVersion', ?)", (version,))
    con.commit()
    con.close()
    return path


def test_bad_databases(tmp_path, caplog):
    with pytest.raises(DataError, match=r"digiKam database not found.*database=/path/to/digikam4.db"):
        load_source(cfg(tmp_path))
    (tmp_path / DATABASE).write_text("not a database")
    with pytest.raises(DataError, match="not a readable SQLite database"):
        load_source(cfg(tmp_path))
    (tmp_path / DATABASE).unlink()
    _database(tmp_path / DATABASE, CORE_SCHEMA.replace("    rating INTEGER,\n", ""), "16")
    with pytest.raises(DataError, match=r"table ImageInformation lacks column\(s\) rating"):
        load_source(cfg(tmp_path))
    (tmp_path / DATABASE).unlink()
    _database(tmp_path / DATABASE, CORE_SCHEMA, "17")
    with caplog.at_level(logging.WARNING, logger="iqs.data.adapters"):
        assert len(load_source(cfg(tmp_path)).table) == 0
    assert "DBVersion 17: checked against digiKam core schemas 10..16" in caplog.text
