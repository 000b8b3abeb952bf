"""dataset=digikam_xmp on the test library: labels, digiKam's sidecar rules, bad inputs."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import digikam_cfg
from tests.conftest import labels_by_path as labels

from iqs.core.errors import DataError
from iqs.core.xmp import EMPTY_XMP_PACKET
from iqs.data.adapters import load_source
from iqs.data.adapters.digikam_xmp import ms_rating_to_stars, sidecar_for
from iqs.data.demo.library import read_manifest
from iqs.data.mixture import single_source_mixture


def cfg(root: Path, **overrides):
    return digikam_cfg(root, "digikam_xmp", **overrides)


def frames(root: Path, storage: str | None = None) -> list[dict]:
    return [f for f in read_manifest(root)["frames"] if storage is None or f["storage"] == storage]


def test_reads_every_label_and_reports_the_rest(library, caplog):
    with caplog.at_level(logging.INFO, logger="iqs.data.adapters"):
        table = load_source(cfg(library)).table
    truth = {f["path"]: f["cls"] for f in frames(library) if f["cls"] is not None}
    assert labels(table) == truth
    np.testing.assert_allclose(table["score"], 1 + 4.5 * table["raw_score"])
    report = table.attrs["digikam_report"]
    m = read_manifest(library)
    assert report["unlabelled"] == m["unlabelled"] and report["labelled"] == m["labelled"]
    assert report["skipped"] == {
        "malformed sidecar": 1,
        "rating out of range": 1,
        "pick label out of range": 1,
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for bad in m["bad_cases"]:  # every bad file named in a warning
        assert any(bad["path"] in w for w in warnings), bad
    assert any(f"{m['unlabelled']} unlabelled (not training data)" in r.getMessage() for r in caplog.records)


def test_sidecar_replaces_embedded_xmp(library):
    over = frames(library, "sidecar_over_embedded")
    assert over
    with_sidecars = labels(load_source(cfg(library)).table)
    without = load_source(cfg(library, read_sidecars=False)).table
    embedded_only = labels(without)
    for f in over:
        assert with_sidecars[f["path"]] == f["cls"]
        assert embedded_only[f["path"]] == (f["cls"] + 1) % 3  # the stale embedded label
    for f in frames(library, "sidecar_appended"):
        assert f["path"] not in embedded_only  # no embedded XMP: unlabelled when sidecars are not read
    for f in frames(library, "embedded"):
        assert embedded_only[f["path"]] == f["cls"]


@pytest.mark.parametrize(
    ("naming", "lost"), [("appended", "sidecar_basename"), ("basename", "sidecar_appended")]
)
def test_sidecar_name_setting(library, naming, lost):
    got = labels(load_source(cfg(library, sidecar_name=naming)).table)
    for f in frames(library, lost):
        assert f["path"] not in got  # digiKam 8.x reads only the configured name
    kept = "sidecar_appended" if lost == "sidecar_basename" else "sidecar_basename"
    for f in frames(library, kept):
        assert got[f["path"]] == f["cls"]


def test_either_prefers_photo_xmp_like_digikam_6(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"")
    for name in ("a.jpg.xmp", "a.xmp"):
        (tmp_path / name).write_text(EMPTY_XMP_PACKET)
    assert sidecar_for(image, "either") == tmp_path / "a.xmp"
    assert sidecar_for(image, "appended") == tmp_path / "a.jpg.xmp"
    (tmp_path / "a.xmp").unlink()
    assert sidecar_for(image, "either") == tmp_path / "a.jpg.xmp"
    assert sidecar_for(image, "basename") is None


def test_label_from_and_rating_rules(library):
    rating_only = frames(library, "rating_only") + frames(library, "ms_rating_only")
    assert rating_only
    pick = labels(load_source(cfg(library, label_from="pick")).table)
    for f in rating_only:
        assert f["path"] not in pick
    rating = labels(load_source(cfg(library, label_from="rating")).table)
    truth = {f["path"]: f["cls"] for f in frames(library) if f["cls"] is not None}
    assert rating == truth  # the generator's stars agree with its pick labels under [1, 3]
    # other thresholds: 2 stars becomes bad
    shifted = labels(load_source(cfg(library, label_from="rating", rating_classes=[2, 3])).table)
    two = [f for f in frames(library) if f["stars"] == 2 and f["storage"] != "unlabelled"]
    assert two and all(shifted[f["path"]] == 0 for f in two)
    rejected = [f for f in frames(library) if f["stars"] == -1 and f["storage"] == "rating_only"]
    as_digikam = labels(load_source(cfg(library, rejected_rating=False)).table)
    for f in rejected:  # digiKam reads -1 as no rating
        assert f["path"] not in as_digikam


@pytest.mark.parametrize(
    ("percent", "stars"),
    [
        (0, 0),
        (1, 1),
        (10, 1),
        (25, 2),
        (49, 2),
        (50, 3),
        (74, 3),
        (75, 4),
        (98, 4),
        (99, 5),
        (100, None),
        (-1, None),
    ],
)
def test_microsoft_rating_as_digikam_converts_it(percent, stars):
    # digiKam's table 0,1,25,50,75,99 and its rule: between two steps take the lower one
    assert ms_rating_to_stars(percent) == stars


def test_labels_survive_any_global_thresholds(library):
    for t1, t2 in ((5.5, 6.5), (4.0, 7.0), (5.0, 5.5)):
        mix = single_source_mixture(cfg(library), {"name": "x", "t1": t1, "t2": t2})
        assert (mix.table["label"] == mix.table["raw_score"]).all()


def test_bad_configs_and_missing_root(tmp_path):
    with pytest.raises(
        DataError, match=r"album root .*missing does not exist.*root=<your digiKam album root>"
    ):
        load_source(cfg(tmp_path / "missing"))
    with pytest.raises(DataError, match="label_from must be one of pick, rating, both"):
        load_source(cfg(tmp_path, label_from="stars"))
    with pytest.raises(DataError, match="rating_classes must satisfy"):
        load_source(cfg(tmp_path, rating_classes=[3, 1]))
    with pytest.raises(DataError, match=r"native_range must be \[0, 2\]"):
        load_source(cfg(tmp_path, native_range=[0, 5]))


def test_unreadable_image_and_empty_sidecar_are_counted(tmp_path, library, caplog):
    f = frames(library, "sidecar_appended")[0]
    for suffix in ("", ".xmp"):
        src = library / (f["path"] + suffix)
        dst = tmp_path / "album" / src.name
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dst)
    (tmp_path / "album" / "truncated.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / "album" / "empty.jpg").write_bytes((library / f["path"]).read_bytes())
    (tmp_path / "album" / "empty.jpg.xmp").write_text("")
    with caplog.at_level(logging.WARNING, logger="iqs.data.adapters"):
        table = load_source(cfg(tmp_path)).table
    assert table["path"].tolist() == [f"album/{Path(f['path']).name}"]
    assert table.attrs["digikam_report"]["skipped"] == {"unreadable image": 1, "malformed sidecar": 1}
    text = caplog.text
    assert "album/truncated.jpg" in text and "album/empty.jpg" in text


def test_unused_signal_is_not_validated(library):
    # label_from=pick ignores ratings, so the photo with a rating of 7 is simply unlabelled, not skipped
    table = load_source(cfg(library, label_from="pick")).table
    assert table.attrs["digikam_report"]["skipped"] == {"malformed sidecar": 1, "pick label out of range": 1}
    table = load_source(cfg(library, label_from="rating")).table
    assert table.attrs["digikam_report"]["skipped"] == {"malformed sidecar": 1, "rating out of range": 1}
