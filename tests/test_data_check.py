"""`iqs data check` and `iqs data prepare` list the unreadable images of a mixture and exit non-zero."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from iqs.cli import main as iqs
from test_bad_images import KINDS, broken, clean_demo  # noqa: F401
from test_train import demo_sources


def overrides(demo: Path, tmp: Path) -> list[str]:
    return [*demo_sources(demo), f"paths.root_dir={tmp}", "workers=2", "progress=false"]


@pytest.mark.slow
def test_check_lists_every_broken_file_and_exits_1(broken, tmp_path, capsys):  # noqa: F811
    root, victims = broken
    assert iqs(["data", "check", *overrides(root, tmp_path), f"report={tmp_path}/rep"]) == 1
    table = pd.read_csv(tmp_path / "rep.csv")
    records = json.loads((tmp_path / "rep.json").read_text())
    assert len(records) == len(table) == 4
    by_path = dict(zip(table["path"], table["reason"], strict=True))
    assert {k: by_path[p].split(":")[0] for k, p in victims.items()} == {k: k for k in KINDS}
    assert set(table["dataset"]) == {"demo_ava"} and all(Path(f).is_absolute() for f in table["file"])
    assert {r["path"] for r in records} == set(victims.values())
    out, err = capsys.readouterr()
    assert all(p in out for p in victims.values()) and "4 unreadable image(s)" in err
    assert "data.on_bad_image" in err  # says what to do next
    # its results serve training: the per-file record now holds every decoded image
    record = json.loads(next((tmp_path / "cache" / "checks").glob("demo_ava-*.json")).read_text())
    assert len(record) == 44 and sum(v[2] is not None for v in record.values()) == 3  # missing: not recorded


def test_check_exits_0_on_a_clean_mixture_and_2_on_a_bad_config(clean_demo, tmp_path, capsys):  # noqa: F811
    assert iqs(["data", "check", *overrides(clean_demo, tmp_path), f"report={tmp_path}/rep"]) == 0
    assert pd.read_csv(tmp_path / "rep.csv").empty
    assert "all 135 images" in capsys.readouterr().out
    assert iqs(["data", "check", *overrides(clean_demo, tmp_path), "data.held_out=nope"]) == 2


@pytest.mark.slow
def test_prepare_exits_1_naming_the_failures_and_redoes_a_repaired_file(broken, tmp_path, capsys):  # noqa: F811
    root, victims = broken
    base = [*demo_sources(root), f"paths.root_dir={tmp_path}", "prepare.short_side=64", "prepare.workers=1"]
    assert iqs(["data", "prepare", *base, "data.held_out=nope"]) == 2  # a bad config: one line, no traceback
    assert "held_out" in capsys.readouterr().err
    assert iqs(["data", "prepare", *base]) == 1
    report = tmp_path / "outputs" / "prepare" / "demo-unreadable.csv"
    assert sorted(pd.read_csv(report)["path"]) == sorted(victims.values())
    assert "4 image(s) could not be prepared" in capsys.readouterr().err
    # a resumed prepare reuses the shards and still reports their failures
    assert iqs(["data", "prepare", *base]) == 1
    assert len(pd.read_csv(report)) == 4
    fixed = root / "ava" / victims["truncated"]
    shutil.copyfile(next(p for p in (root / "ava" / "images").glob("*.jpg") if p.stat().st_size > 100), fixed)
    later = max(p.stat().st_mtime for p in (tmp_path / "cache").rglob("shard-*.json")) + 10
    os.utime(fixed, (later, later))
    assert iqs(["data", "prepare", *base]) == 1
    assert sorted(pd.read_csv(report)["path"]) == sorted(set(victims.values()) - {victims["truncated"]})
    for kind in ("empty", "not_an_image", "missing"):
        fixed = root / "ava" / victims[kind]
        shutil.copyfile(root / "ava" / victims["truncated"], fixed)
        os.utime(fixed, (later, later))
    assert iqs(["data", "prepare", *base]) == 0


def test_a_demo_dir_holding_other_files_is_refused_and_kept(tmp_path, capsys):
    """The demo is (re)built into data.demo_dir; a folder there without the demo's BUILD.json (someone's photos)
    is refused, exit 2 naming it, and nothing in it is moved or deleted."""
    photos = tmp_path / "Pictures"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"a photograph")
    assert iqs(["data", "check", "data=demo", f"data.demo_dir={photos}", f"paths.root_dir={tmp_path}"]) == 2
    assert str(photos) in capsys.readouterr().err
    assert [p.name for p in photos.iterdir()] == ["holiday.jpg"]
    assert (photos / "holiday.jpg").read_bytes() == b"a photograph"
    assert not list(tmp_path.glob(".Pictures-*"))  # not moved aside either
