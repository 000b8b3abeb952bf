"""`iqs predict --write-xmp rating|both --bursts`: stars and best-of-burst on real JPEGs, sidecars and exiv2;
user ratings and labels are never touched without --overwrite, --dry-run lists every change."""

from __future__ import annotations

import csv
import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyexiv2
import pytest
from PIL import Image
from tests.conftest import tiny_quality_model

from iqs.core.xmp import (
    IQS_RATING_KEY,
    MS_RATING_KEY,
    PICK_LABEL_KEY,
    RATING,
    RATING_KEY,
    TAGS_KEY,
    apply_change,
    apply_tag,
    find_user_label,
    plan_rating,
    plan_tag,
    read_xmp,
    sidecar_path,
    write_properties,
)
from iqs.data.bursts import burst_ids_or_single
from iqs.deploy.export import exporter as export
from iqs.deploy.predict import command as predict_cli
from iqs.metrics.label_rule import stars_for


def _export(tmp: Path, **meta) -> Path:
    model = tiny_quality_model()
    model.meta.update(meta)
    return export.export_model(model, model.meta, tmp, "tiny", ["full"], 17, "test", verify=False)["full"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float], float]:
    """A model with rating cuts at its own score quantiles and a burst margin, exported in the full profile."""
    tmp = tmp_path_factory.mktemp("culling-model")
    plain = _export(tmp / "plain")
    album = _album(tmp / "probe")
    out = tmp / "probe.csv"
    assert predict_cli.main([str(album), f"model={plain}", "--workers", "1", "-o", str(out)]) == 0
    scores = sorted(float(r["score"]) for r in csv.DictReader(out.read_text(encoding="utf-8").splitlines()))
    cuts = [float(np.quantile(scores, q)) for q in (0.2, 0.4, 0.6, 0.8)]
    margin = float(np.ptp(scores) / 4)
    model = _export(tmp / "culling", rating_cuts=cuts, burst_margin=margin)
    return model, cuts, margin


def _album(root: Path) -> Path:
    """Two bursts of 3 and 2 frames (EXIF times 1-2 s apart), a lone frame, one without EXIF time."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    start = datetime(2024, 5, 1, 10)
    times = {"a1": 0, "a2": 1, "a3": 3, "b1": 600, "b2": 602, "c1": 1800, "d1": None}
    for name, offset in times.items():
        pixels = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        pixels[:, : 20 * (1 + len(name) % 3)] //= 1 + int(name[1])  # frames of a burst differ
        path = root / f"{name}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        if offset is not None:
            img = pyexiv2.Image(str(path))
            img.modify_exif(
                {
                    "Exif.Photo.DateTimeOriginal": (start + timedelta(seconds=offset)).strftime(
                        "%Y:%m:%d %H:%M:%S"
                    )
                }
            )
            img.close()
    return root


def _user_ratings(root: Path) -> None:
    """a1: the user's rating ("rejected") in a sidecar; b1: a Windows rating embedded in the photo; c1: a pick label."""
    write_properties(sidecar_path(root / "a1.jpg"), {RATING_KEY: "-1"})  # XMP "rejected"
    img = pyexiv2.Image(str(root / "b1.jpg"))
    img.modify_xmp({MS_RATING_KEY: "75"})
    img.close()
    write_properties(sidecar_path(root / "c1.jpg", "basename"), {PICK_LABEL_KEY: "3"})


def _hashes(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def _run(root: Path, model: Path, capsys, *flags: str) -> tuple[int, list[dict], str]:
    capsys.readouterr()
    out = root.parent / f"{root.name}.csv"
    rc = predict_cli.main([str(root), f"model={model}", "--workers", "1", "-o", str(out), *flags])
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    rows = list(csv.DictReader(out.read_text(encoding="utf-8").splitlines())) if out.exists() else []
    return rc, rows, err


@pytest.mark.slow
def test_stars_follow_the_models_cuts_and_user_ratings_are_kept(scored, tmp_path: Path, capsys) -> None:
    model, cuts, _ = scored
    root = _album(tmp_path / "album")
    _user_ratings(root)
    before = _hashes(root)

    rc, rows, err = _run(root, model, capsys, "--write-xmp", "rating", "--dry-run")
    assert rc == 0 and _hashes(root) == before  # a dry run writes nothing ...
    changes = err.split("[dry-run] ")[1:]
    assert len(changes) == len(rows)  # ... and lists every photo's change or why it is left alone
    assert sum("your Rating" in line for line in changes) == 2

    rc, rows, err = _run(root, model, capsys, "--write-xmp", "rating")
    assert rc == 0 and "left alone (user rating) 2" in err
    stars = {Path(r["path"]).name: int(r["stars"]) for r in rows}
    for r in rows:
        assert int(r["stars"]) == stars_for([float(r["score"])], cuts)[0]
    assert read_xmp(sidecar_path(root / "a1.jpg"))[RATING_KEY] == "-1"  # the user's, kept
    assert not sidecar_path(root / "b1.jpg").exists()  # the embedded Windows rating is the user's
    for name in ("a2", "a3", "b2", "c1", "d1"):
        sidecar = sidecar_path(root / f"{name}.jpg")
        xmp = read_xmp(sidecar)
        assert xmp[RATING_KEY] == xmp[IQS_RATING_KEY] == str(stars[f"{name}.jpg"])
        assert PICK_LABEL_KEY not in xmp  # rating mode writes no pick label
    assert read_xmp(sidecar_path(root / "c1.jpg", "basename"))[PICK_LABEL_KEY] == "3"

    # a rerun changes nothing; --overwrite replaces the sidecar rating where it is
    rc, _, err = _run(root, model, capsys, "--write-xmp", "rating")
    assert "unchanged 5" in err
    rc, _, err = _run(root, model, capsys, "--write-xmp", "rating", "--overwrite")
    assert read_xmp(sidecar_path(root / "a1.jpg"))[RATING_KEY] == str(stars["a1.jpg"])
    # the embedded rating is replaced as pick labels are: by a sidecar, the photo itself untouched
    assert read_xmp(sidecar_path(root / "b1.jpg"))[RATING_KEY] == str(stars["b1.jpg"])
    assert _hashes(root)["b1.jpg"] == before["b1.jpg"]
    assert "replaced user label 2" in err


@pytest.mark.slow
def test_bursts_accept_the_best_and_reject_the_clearly_worse(scored, tmp_path: Path, capsys) -> None:
    model, _, margin = scored
    root = _album(tmp_path / "album")
    rc, rows, err = _run(root, model, capsys, "--bursts", "--write-xmp", "both")
    assert rc == 0
    by_name = {Path(r["path"]).name: r for r in rows}
    times = [None if n == "d1.jpg" else 1.0 for n in by_name]  # only presence matters for the names below
    assert by_name["d1.jpg"]["burst"] == str(root / "d1.jpg")  # no EXIF time: its own burst
    assert by_name["a1.jpg"]["burst"] == by_name["a2.jpg"]["burst"] == by_name["a3.jpg"]["burst"]
    assert by_name["b1.jpg"]["burst"] == by_name["b2.jpg"]["burst"] != by_name["a1.jpg"]["burst"]
    assert len({r["burst"] for r in rows}) == 4 and len(times) == 7
    for burst in {r["burst"] for r in rows}:
        members = sorted((r for r in rows if r["burst"] == burst), key=lambda r: -float(r["score"]))
        assert [int(r["burst_rank"]) for r in members] == list(range(1, len(members) + 1))
        best = float(members[0]["score"])
        if len(members) == 1:
            pick = {"bad": "1", "normal": "2", "good": "3"}[members[0]["class"]]
            assert members[0]["pick_label"] == pick
            continue
        assert members[0]["pick_label"] == "3"
        for r in members[1:]:
            if best - float(r["score"]) > margin:
                assert r["pick_label"] == "1"
            else:
                assert r["pick_label"] == {"bad": "1", "normal": "2", "good": "3"}[r["class"]]
    for name, r in by_name.items():  # both: the decided pick label and the stars in the sidecar
        xmp = read_xmp(sidecar_path(root / name))
        assert xmp[PICK_LABEL_KEY] == r["pick_label"] and xmp[RATING_KEY] == r["stars"]
    assert "bursts:" in err and "without EXIF time 1" in err


def test_the_same_burst_rule_as_the_splits(tmp_path: Path) -> None:
    paths = [str(tmp_path / "x" / f"{i}.jpg") for i in range(4)]
    got = burst_ids_or_single(paths, [0.0, 5.0, 20.0, 24.0], 10)
    assert got[0] == got[1] != got[2] == got[3]


@pytest.mark.slow
def test_a_model_without_rating_cuts_is_refused_with_what_to_do(tmp_path: Path, capsys) -> None:
    model = _export(tmp_path / "m")
    root = _album(tmp_path / "album")
    rc, _, err = _run(root, model, capsys, "--write-xmp", "rating")
    assert rc == 2 and "rating_cuts=[c1,c2,c3,c4]" in err
    rc, rows, _ = _run(root, model, capsys, "--write-xmp=rating", "rating_cuts=[0,1,2,3]")
    assert rc == 0 and all(r["stars"] == str(stars_for([float(r["score"])], [0, 1, 2, 3])[0]) for r in rows)
    rc, _, err = _run(root, model, capsys, "rating_cuts=[3,2,1,0]")
    assert rc == 2 and "non-decreasing" in err
    rc, _, err = _run(root, model, capsys, "--write-xmp=stars")
    assert rc == 2 and "pick, rating, both" in err
    for bad, named in (
        ("burst_margin=abc", "burst_margin"),
        ("burst_top_k=0", "burst_top_k"),
        ("burst_gap_s=-1", "burst_gap_s"),
    ):
        rc, _, err = _run(root, model, capsys, "--bursts", bad)
        assert rc == 2 and named in err


def test_user_rating_rules(tmp_path: Path) -> None:
    image = tmp_path / "p.jpg"
    Image.new("RGB", (8, 8)).save(image)
    assert find_user_label(image, RATING) is None
    change = plan_rating(image, 4)
    assert change.creates_sidecar and change.changes_anything and apply_change(change)
    assert find_user_label(image, RATING) is None  # our own record
    write_properties(sidecar_path(image), {RATING_KEY: "0"})  # the user cleared our rating in digiKam
    user = find_user_label(image, RATING)
    assert user is not None and user.value == "0" and "no rating" in user.describe()
    assert plan_rating(image, 5).keeps_user_label
    with pytest.raises(ValueError, match="1..5"):
        plan_rating(image, 6)


def test_a_tag_is_added_and_nothing_else_changes(tmp_path: Path) -> None:
    image = tmp_path / "p.jpg"
    Image.new("RGB", (8, 8)).save(image)
    img = pyexiv2.Image(str(image))  # the user's labels and a tag live in the photo itself
    img.modify_xmp({PICK_LABEL_KEY: "2", RATING_KEY: "3", TAGS_KEY: ["People/Ann"]})
    img.close()
    photo_before = image.read_bytes()
    change = plan_tag(image, "iqs/label-me")
    assert change.creates_sidecar and change.tags == ("People/Ann",)
    assert apply_tag(change)
    xmp = read_xmp(sidecar_path(image))
    # the new sidecar starts from the photo's XMP, which it hides from digiKam: the labels stay visible
    assert xmp[PICK_LABEL_KEY] == "2" and xmp[RATING_KEY] == "3"
    assert xmp[TAGS_KEY] == ["People/Ann", "iqs/label-me"]
    assert image.read_bytes() == photo_before
    assert not plan_tag(image, "iqs/label-me").changes_anything  # idempotent
    other = tmp_path / "q.jpg"
    Image.new("RGB", (8, 8)).save(other)
    (tmp_path / "q.xmp").write_text(sidecar_path(image).read_text(encoding="utf-8"), encoding="utf-8")
    change = plan_tag(other, "x/y")  # an existing sidecar of the other name is the one digiKam reads
    assert change.sidecar == tmp_path / "q.xmp" and apply_tag(change)
    assert read_xmp(tmp_path / "q.xmp")[TAGS_KEY] == ["People/Ann", "iqs/label-me", "x/y"]
