"""The test digiKam library: deterministic, realistic in the ways the adapters must handle, labels follow quality."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import datetime
from pathlib import Path

import numpy as np
import pyexiv2
import pytest
from scipy.stats import spearmanr

from iqs.cli import main as cli_main
from iqs.data.adapters.digikam_schema import PICK_LABEL_TAGS, SCHEMA_VERSION
from iqs.data.demo.library import (
    ALBUMS,
    DATABASE,
    LibrarySpec,
    build_library,
    ensure_library,
    level_class,
    read_manifest,
)

SMALL = LibrarySpec(crops_per_photo=2, long_side=64, photos=("astronaut", "coffee", "chelsea"))


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return ensure_library(tmp_path_factory.getbasetemp() / "digikam-library", seed=0)


def _digests(root: Path) -> dict[str, str]:
    # digikam4.db holds the library's absolute path (AlbumRoots.identifier), so it differs between folders
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in (DATABASE, "library.json")
    }


def test_same_seed_same_library_other_seed_differs(tmp_path):
    a = build_library(tmp_path / "a", seed=3, spec=SMALL)
    b = build_library(tmp_path / "b", seed=3, spec=SMALL)
    c = build_library(tmp_path / "c", seed=4, spec=SMALL)
    assert a["frames"] == b["frames"]
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert a["frames"] != c["frames"]
    with pytest.raises(FileExistsError, match="empty folder"):
        build_library(tmp_path / "a", seed=3, spec=SMALL)


def test_library_has_every_storage_kind_and_bad_case(library):
    m = read_manifest(library)
    frames = m["frames"]
    assert all(n > 0 for n in m["storage"].values()), m["storage"]
    assert max(f["path"].count("/") for f in frames) >= 3  # nested albums, e.g. 2024/Hike/Day 1/IMG.jpg
    assert {f["album"] for f in frames} <= set(ALBUMS)
    by_kind = {k: [f for f in frames if f["storage"] == k] for k in m["storage"]}
    for f in by_kind["sidecar_appended"]:
        assert (library / (f["path"] + ".xmp")).is_file()
    for f in by_kind["sidecar_basename"]:
        assert (library / f["path"]).with_suffix(".xmp").is_file()
    for f in by_kind["embedded"]:  # the label is inside the JPEG, and there is no sidecar
        img = pyexiv2.Image(str(library / f["path"]))
        xmp = img.read_xmp()
        img.close()
        assert xmp["Xmp.digiKam.PickLabel"] == str(f["cls"] + 1)
        assert not (library / (f["path"] + ".xmp")).exists()
    for f in by_kind["unlabelled"]:
        assert f["cls"] is None and not (library / (f["path"] + ".xmp")).exists()
    assert {b["reason"] for b in m["bad_cases"]} == {
        "malformed sidecar",
        "rating out of range",
        "pick label out of range",
    }


def test_bursts_are_frames_seconds_apart_with_exif_dates(library):
    frames = read_manifest(library)["frames"]
    bursts: dict[str, list[dict]] = {}
    for f in frames:
        bursts.setdefault(f["burst"], []).append(f)
    multi = [b for b in bursts.values() if len(b) > 1]
    assert len(multi) >= 10
    for b in multi:
        t = sorted(datetime.fromisoformat(f["capture"]) for f in b)
        gaps = np.diff([x.timestamp() for x in t])
        assert ((gaps >= 1) & (gaps <= 3)).all()
    with_date = [f for f in frames if f["exif_date"]]
    without = [f for f in frames if not f["exif_date"]]
    assert with_date and without
    img = pyexiv2.Image(str(library / with_date[0]["path"]))
    exif = img.read_exif()
    img.close()
    expected = datetime.fromisoformat(with_date[0]["capture"]).strftime("%Y:%m:%d %H:%M:%S")
    assert exif["Exif.Photo.DateTimeOriginal"] == expected
    f = without[0]  # no EXIF date: the file time is the capture time
    assert (library / f["path"]).stat().st_mtime == datetime.fromisoformat(f["capture"]).timestamp()


def test_labels_follow_the_demo_quality(library):
    frames = [f for f in read_manifest(library)["frames"] if f["cls"] is not None]
    levels = np.array([f["level"] for f in frames])
    classes = np.array([f["cls"] for f in frames])
    assert spearmanr(levels, classes).statistic < -0.8  # more distortion, worse class
    agree = np.mean([level_class(lv) == c for lv, c in zip(levels, classes, strict=True)])
    assert 0.85 <= agree < 1.0  # the 5 % label noise is there, and small


def test_database_follows_digikam_schema(library):
    con = sqlite3.connect(library / DATABASE)
    try:
        version = con.execute("SELECT value FROM Settings WHERE keyword='DBVersion'").fetchone()[0]
        tags = {n for (n,) in con.execute("SELECT name FROM Tags")}
        identifier, specific = con.execute("SELECT identifier, specificPath FROM AlbumRoots").fetchone()
        albums = {p for (p,) in con.execute("SELECT relativePath FROM Albums")}
        tree = con.execute("SELECT COUNT(*) FROM TagsTree").fetchone()[0]
    finally:
        con.close()
    assert int(version) == SCHEMA_VERSION
    assert set(PICK_LABEL_TAGS.values()) <= tags and "_Digikam_Internal_Tags_" in tags
    assert identifier == f"volumeid:?path={library.resolve().as_posix()}" and specific == "/"
    assert {"/", "/2024", "/2024/Hike", "/2024/Hike/Day 1"} <= albums  # parents exist, as digiKam makes them
    assert tree > 0  # digiKam's insert_tagstree trigger ran


def test_build_library_command(library, capsys):
    before = (library / "library.json").stat().st_mtime_ns
    assert cli_main(["data", "build-library", f"out_dir={library}", "seed=0"]) == 0
    assert "photos in 7 albums" in capsys.readouterr().out
    assert (library / "library.json").stat().st_mtime_ns == before  # up to date: not rebuilt
    assert cli_main(["data", "build-library", "seeds=1"]) == 2
    assert "did you mean 'seed'" in capsys.readouterr().err


def test_build_library_command_rejects_bad_values(capsys):
    assert cli_main(["data", "build-library", "crops_per_photo=many"]) == 2
    assert "crops_per_photo must be an integer, got 'many'" in capsys.readouterr().err
    assert cli_main(["data", "build-library", "long_side=9999"]) == 2
    assert "long_side must be in 32..384" in capsys.readouterr().err


def test_every_storage_has_a_writer() -> None:
    from iqs.data.demo.library_files import STORAGE_WRITERS
    from iqs.data.demo.library_layout import STORAGE

    assert set(STORAGE_WRITERS) | {"unlabelled"} == set(STORAGE)


def test_build_library_command_reads_conf_library(tmp_path, capsys):
    """conf/library.yaml's sizes are LibrarySpec's defaults, and the command goes through compose: an unknown
    key or a bad value is exit 2 with the key named, never a traceback."""
    from iqs.core.config import compose
    from iqs.data.demo.library import LibrarySpec

    cfg = compose("library")
    assert (cfg.crops_per_photo, cfg.long_side) == (LibrarySpec().crops_per_photo, LibrarySpec().long_side)
    assert cli_main(["data", "build-library", f"out_dir={tmp_path}", "force=maybe"]) == 2
    assert "force must be true or false" in capsys.readouterr().err
    assert not (tmp_path / "library.json").exists()


@pytest.mark.slow
def test_build_library_never_deletes_a_folder_it_did_not_build(tmp_path, capsys):
    """out_dir=~/Pictures must not wipe the photographs: a folder holding files but no library.json is refused
    (exit 2, one line naming it) and left as it was; a previous build is rebuilt; force=true replaces anything."""
    spec = ["crops_per_photo=1", "long_side=32"]
    photos = tmp_path / "Pictures"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"a photograph")
    assert cli_main(["data", "build-library", f"out_dir={photos}", *spec]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(photos) in err and "force=true" in err
    assert [p.name for p in photos.iterdir()] == ["holiday.jpg"]
    assert (photos / "holiday.jpg").read_bytes() == b"a photograph"
    # a previous build (its library.json) of another seed is rebuilt without force
    built = tmp_path / "library"
    assert cli_main(["data", "build-library", f"out_dir={built}", "seed=1", *spec]) == 0
    (built / "stale.txt").write_text("left over")
    assert cli_main(["data", "build-library", f"out_dir={built}", "seed=2", *spec]) == 0
    assert read_manifest(built)["seed"] == 2 and not (built / "stale.txt").exists()
    assert cli_main(["data", "build-library", f"out_dir={photos}", "force=true", *spec]) == 0
    assert not (photos / "holiday.jpg").exists() and read_manifest(photos)["seed"] == 0
