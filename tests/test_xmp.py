from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyexiv2
import pytest
from PIL import Image

from iqs.core.xmp import (
    IQS_PICK_LABEL_KEY,
    PICK_LABEL_KEY,
    XmpError,
    apply_change,
    plan_pick_label,
    read_pick_label,
    read_xmp,
    sidecar_path,
    write_properties,
)

# A sidecar as digiKam leaves it: rating, keywords, a face region, digiKam tags and edit history.
RICH_SIDECAR = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:digiKam="http://www.digikam.org/ns/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"
    xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
    xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#"
    xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"
    xmp:Rating="4"
    digiKam:ColorLabel="3">
   <dc:subject><rdf:Bag><rdf:li>holiday</rdf:li><rdf:li>Zürich</rdf:li><rdf:li>Alice</rdf:li></rdf:Bag></dc:subject>
   <digiKam:TagsList><rdf:Seq><rdf:li>People/Alice</rdf:li><rdf:li>Places/Zürich</rdf:li></rdf:Seq></digiKam:TagsList>
   <xmpMM:History><rdf:Seq>
    <rdf:li stEvt:action="saved" stEvt:when="2024-05-01T10:00:00+02:00" stEvt:softwareAgent="digiKam 8.4.0"/>
    <rdf:li stEvt:action="converted" stEvt:when="2024-05-02T11:30:00+02:00" stEvt:softwareAgent="darktable 4.6"/>
   </rdf:Seq></xmpMM:History>
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:AppliedToDimensions stDim:w="4000" stDim:h="3000" stDim:unit="pixel"/>
    <mwg-rs:RegionList><rdf:Bag><rdf:li><rdf:Description mwg-rs:Name="Alice" mwg-rs:Type="Face">
     <mwg-rs:Area stArea:x="0.512345" stArea:y="0.4" stArea:w="0.10" stArea:h="0.15" stArea:unit="normalized"/>
    </rdf:Description></rdf:li></rdf:Bag></mwg-rs:RegionList>
   </mwg-rs:Regions>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "IMG_0001.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def test_sidecar_names(tmp_path: Path) -> None:
    assert sidecar_path(tmp_path / "a.b.jpg") == tmp_path / "a.b.jpg.xmp"
    assert sidecar_path(tmp_path / "a.b.jpg", "basename") == tmp_path / "a.b.xmp"
    with pytest.raises(ValueError, match="unknown sidecar style"):
        sidecar_path(tmp_path / "a.jpg", "sidecar")


def test_rewrites_keep_every_other_property(photo: Path) -> None:
    sidecar = sidecar_path(photo)
    sidecar.write_text(RICH_SIDECAR, encoding="utf-8")
    before = read_xmp(sidecar)
    assert before["Xmp.mwg-rs.Regions/mwg-rs:RegionList[1]/mwg-rs:Name"] == "Alice"
    assert before["Xmp.xmpMM.History[2]/stEvt:softwareAgent"] == "darktable 4.6"
    image_hash = _sha(photo)
    first_packet = None
    for i in range(20):
        cls = [2, 0, 1][i % 3]
        assert apply_change(plan_pick_label(photo, cls)) is True
        after = read_xmp(sidecar)
        assert after[PICK_LABEL_KEY] == str(cls + 1)
        assert after[IQS_PICK_LABEL_KEY] == str(cls + 1)  # iqs's record of what it wrote
        rest = {k: v for k, v in after.items() if k not in (PICK_LABEL_KEY, IQS_PICK_LABEL_KEY)}
        assert rest == before  # values, struct paths and list order unchanged
        # exiv2 re-serialises once; from then on the packet differs only in the label itself
        packet = sidecar.read_text(encoding="utf-8")
        packet = packet.replace(f'digiKam:PickLabel="{cls + 1}"', "").replace(
            f'iqs:PickLabel="{cls + 1}"', ""
        )
        first_packet = first_packet or packet
        assert packet == first_packet
    assert read_pick_label(sidecar) == cls + 1  # the last label written wins
    # raw values are kept verbatim, not re-formatted as numbers
    assert 'stArea:x="0.512345"' in first_packet and 'stArea:w="0.10"' in first_packet
    assert _sha(photo) == image_hash
    assert not [p for p in photo.parent.iterdir() if p.name.endswith(".tmp")]


def test_new_sidecar_basename_style(photo: Path) -> None:
    change = plan_pick_label(photo, 0, "basename")
    assert change.creates_sidecar and change.old_label is None and change.new_label == 1
    image_hash = _sha(photo)
    apply_change(change)
    sidecar = photo.with_suffix(".xmp")
    assert read_xmp(sidecar) == {PICK_LABEL_KEY: "1", IQS_PICK_LABEL_KEY: "1"}
    # exiv2 reads it back as a sidecar in its own right (what digiKam does)
    img = pyexiv2.Image(str(sidecar))
    try:
        assert img.read_xmp()[PICK_LABEL_KEY] == "1"
    finally:
        img.close()
    assert not sidecar_path(photo).exists()
    assert _sha(photo) == image_hash
    # same label again: nothing to do, file untouched
    mtime = sidecar.stat().st_mtime_ns
    again = plan_pick_label(photo, 0, "basename")
    assert not again.changes_anything and apply_change(again) is False
    assert sidecar.stat().st_mtime_ns == mtime


def test_plan_is_a_dry_run(photo: Path) -> None:
    sidecar = sidecar_path(photo)
    sidecar.write_text(RICH_SIDECAR, encoding="utf-8")
    before = sidecar.read_bytes()
    change = plan_pick_label(photo, 2)
    assert change.changes_anything and "None" not in change.describe() and "Accepted" in change.describe()
    assert sidecar.read_bytes() == before
    assert not plan_pick_label(photo.with_name("other.jpg"), 1).sidecar.exists()


def test_corrupt_sidecar_left_alone(photo: Path) -> None:
    sidecar = sidecar_path(photo)
    sidecar.write_bytes(b"\x00\x01 this is not XMP")
    with pytest.raises(XmpError, match=str(sidecar.name)):
        write_properties(sidecar, {PICK_LABEL_KEY: "3"})
    assert sidecar.read_bytes() == b"\x00\x01 this is not XMP"
    assert not [p for p in photo.parent.iterdir() if p.name.endswith(".tmp")]


def test_plan_rejects_unknown_class(photo: Path) -> None:
    with pytest.raises(ValueError, match="0, 1 or 2"):
        plan_pick_label(photo, 3)
