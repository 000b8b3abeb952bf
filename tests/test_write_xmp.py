"""`iqs predict --write-xmp` never overwrites a pick label the user set (real JPEGs, sidecars, exiv2)."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pyexiv2
import pytest
from PIL import Image
from tests.conftest import tiny_quality_model

from iqs.core.xmp import (
    IQS_PICK_LABEL_KEY,
    PICK_LABEL_KEY,
    XmpError,
    apply_change,
    find_user_label,
    plan_pick_label,
    read_xmp,
    write_properties,
)
from iqs.deploy.export import exporter as export
from iqs.deploy.predict import command as predict_cli

RATING_KEY = "Xmp.xmp.Rating"


def _sidecar(pick: str | None = None, rating: str | None = None) -> str:
    attrs = "".join(
        f' {name}="{value}"'
        for name, value in (("digiKam:PickLabel", pick), ("xmp:Rating", rating))
        if value is not None
    )
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        f'xmlns:digiKam="http://www.digikam.org/ns/1.0/"{attrs}/></rdf:RDF></x:xmpmeta>\n'
        '<?xpacket end="w"?>\n'
    )


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny timm backbone with a regression head, exported in the full profile `iqs predict` reads."""
    model = tiny_quality_model()
    out = tmp_path_factory.mktemp("model")
    return export.export_model(model, model.meta, out, "tiny", ["full"], 17, "test", verify=False)["full"]


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """Photos labelled every way digiKam stores a label, unlabelled ones, and a broken sidecar."""
    root = tmp_path / "album"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in "abcdefg":
        pixels = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{name}.jpg", quality=90)
    (root / "a.jpg.xmp").write_text(_sidecar(pick="1", rating="4"), encoding="utf-8")  # user, appended name
    (root / "b.xmp").write_text(_sidecar(pick="3"), encoding="utf-8")  # user, basename name
    embedded = pyexiv2.Image(str(root / "c.jpg"))  # user, embedded in the photo
    embedded.modify_xmp({PICK_LABEL_KEY: "2"})
    embedded.close()
    (root / "d.jpg.xmp").write_text(_sidecar(rating="5"), encoding="utf-8")  # stars only: no pick label
    (root / "f.jpg.xmp").write_text(_sidecar(pick="0"), encoding="utf-8")  # 0 = digiKam's "no pick label"
    (root / "g.jpg.xmp").write_text("<x:xmpmeta broken", encoding="utf-8")  # e: no sidecar at all
    return root


def _hashes(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def _predict(root: Path, model: Path, capsys, *flags: str) -> str:
    capsys.readouterr()
    out = root.parent / "scores.csv"
    rc = predict_cli.main(
        [str(root), "--write-xmp", *flags, f"model={model}", "--workers", "1", "-o", str(out)]
    )
    assert rc == 0
    return capsys.readouterr().err


def _pick_labels(root: Path) -> dict[str, str]:
    """photo name -> the pick label `iqs predict` reported for it (scores.csv)."""
    with open(root.parent / "scores.csv", newline="", encoding="utf-8") as f:
        return {Path(r["path"]).name: r["pick_label"] for r in csv.DictReader(f)}


def _counts(stderr: str) -> dict[str, int]:
    line = next(x for x in stderr.splitlines() if x.startswith("XMP"))
    return {k.strip(): int(v) for k, v in re.findall(r"([a-z ()]+?) (\d+)", line.split(":", 1)[1])}


def test_user_labels_are_kept_byte_for_byte_and_counted(library: Path, onnx_model: Path, capsys) -> None:
    before = _hashes(library)
    counts = _counts(_predict(library, onnx_model, capsys))
    assert counts == {"written": 3, "left alone (user label)": 3, "failed": 1}
    after = _hashes(library)
    # the user's labels: sidecars (both names) and photos byte for byte, no new sidecar beside them
    for name in ("a.jpg.xmp", "b.xmp", "c.jpg", "g.jpg.xmp", *(f"{n}.jpg" for n in "abcdefg")):
        assert after[name] == before[name], name
    assert "b.jpg.xmp" not in after and "c.jpg.xmp" not in after
    # unlabelled photos got the model's label, recorded as iqs's own; the stars stayed
    for name in ("d", "e", "f"):
        xmp = read_xmp(library / f"{name}.jpg.xmp")
        assert xmp[PICK_LABEL_KEY] in ("1", "2", "3") and xmp[IQS_PICK_LABEL_KEY] == xmp[PICK_LABEL_KEY]
    assert read_xmp(library / "d.jpg.xmp")[RATING_KEY] == "5"

    # a rerun leaves everything as it is; a label the user then changes in digiKam becomes theirs
    assert _counts(_predict(library, onnx_model, capsys))["unchanged"] == 3
    model_label = read_xmp(library / "e.jpg.xmp")[PICK_LABEL_KEY]
    user_label = {"1": "3", "2": "1", "3": "2"}[model_label]
    write_properties(library / "e.jpg.xmp", {PICK_LABEL_KEY: user_label})  # as digiKam rewrites it
    e_bytes = (library / "e.jpg.xmp").read_bytes()
    counts = _counts(_predict(library, onnx_model, capsys))
    assert counts["left alone (user label)"] == 4 and counts["unchanged"] == 2
    assert (library / "e.jpg.xmp").read_bytes() == e_bytes


def test_a_label_cleared_in_digikam_stays_cleared(library: Path, onnx_model: Path, capsys) -> None:
    _predict(library, onnx_model, capsys)
    sidecar = library / "d.jpg.xmp"
    assert read_xmp(sidecar)[IQS_PICK_LABEL_KEY] in ("1", "2", "3")
    write_properties(sidecar, {PICK_LABEL_KEY: "0"})  # digiKam's "No pick label" (DMetadata writes 0)
    before = _hashes(library)
    change = plan_pick_label(library / "d.jpg", 0)
    assert change.keeps_user_label and change.user_label is not None and change.user_label.value == "0"
    assert "left alone, your PickLabel 0 (None) in d.jpg.xmp" in change.describe()
    counts = _counts(_predict(library, onnx_model, capsys))
    assert counts["left alone (user label)"] == 4 and counts["unchanged"] == 2
    assert _hashes(library) == before
    # a label removed outright beside our record was cleared too; --overwrite brings the model's back
    text = sidecar.read_text(encoding="utf-8")
    text = re.sub(r'\s*digiKam:PickLabel="0"|<digiKam:PickLabel>0</digiKam:PickLabel>', "", text)
    sidecar.write_text(text, encoding="utf-8")
    assert PICK_LABEL_KEY not in read_xmp(sidecar)
    assert find_user_label(library / "d.jpg") is not None
    _predict(library, onnx_model, capsys, "--overwrite")
    assert read_xmp(sidecar)[PICK_LABEL_KEY] == _pick_labels(library)["d.jpg"]


def test_overwrite_replaces_user_labels_where_they_are(library: Path, onnx_model: Path, capsys) -> None:
    photos = {n: _hashes(library)[f"{n}.jpg"] for n in "abcdefg"}
    counts = _counts(_predict(library, onnx_model, capsys, "--overwrite"))
    assert counts["written"] == 6 and counts["replaced user label"] == 3 and counts["failed"] == 1
    rows = _pick_labels(library)
    # sidecar labels replaced in place (both names); the stars of a.jpg.xmp kept
    assert read_xmp(library / "a.jpg.xmp")[PICK_LABEL_KEY] == rows["a.jpg"]
    assert read_xmp(library / "a.jpg.xmp")[RATING_KEY] == "4"
    assert (
        read_xmp(library / "b.xmp")[PICK_LABEL_KEY] == rows["b.jpg"] and not (library / "b.jpg.xmp").exists()
    )
    # an embedded label: the photo is never written, the sidecar digiKam reads first gets the label
    assert read_xmp(library / "c.jpg.xmp")[PICK_LABEL_KEY] == rows["c.jpg"]
    assert {n: _hashes(library)[f"{n}.jpg"] for n in "abcdefg"} == photos


def test_find_user_label_rules(tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    assert find_user_label(photo) is None
    (tmp_path / "p.xmp").write_text(_sidecar(pick="2"), encoding="utf-8")
    found = find_user_label(photo)
    assert found is not None and found.where.name == "p.xmp" and found.value == "2"
    change = plan_pick_label(photo, 0)
    assert change.keeps_user_label and not change.changes_anything and apply_change(change) is False
    assert not (tmp_path / "p.jpg.xmp").exists() and "left alone" in change.describe()
    (tmp_path / "p.xmp").unlink()
    (tmp_path / "p.jpg.xmp").write_text("not xmp", encoding="utf-8")
    with pytest.raises(XmpError, match="p.jpg.xmp"):
        plan_pick_label(photo, 0)  # cannot tell whether the user labelled it: nothing is planned
