"""Export profiles are records (iqs.core.export_profiles): every other file asks the record."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
import pytest
from tests.conftest import tiny_quality_model

from iqs.core import export_profiles as profiles
from iqs.core.export_profiles import ONNX, TF_GRAPHDEF, ProfileError, format_of, profile
from iqs.deploy.compat.opencv_matrix import output_layer
from iqs.deploy.digikam.files import check_model
from iqs.deploy.digikam.paths import InstallError
from iqs.deploy.export import exporter as export


def test_each_profile_names_one_file_format_and_role() -> None:
    suffixes = [p.suffix for p in profiles.PROFILES.values()]
    assert len(set(suffixes)) == len(suffixes)
    assert profiles.PREDICT is profiles.FULL and profiles.INSTALL is profiles.DIGIKAM
    assert profile("digikam").format is TF_GRAPHDEF and profile("digikam").opencv_releases
    assert all(p.format is ONNX and not p.opencv_releases for p in (profiles.FULL, profiles.CONTRACT_ONNX))
    assert (
        format_of("m.digikam.pb") is TF_GRAPHDEF
        and format_of("M.ONNX") is ONNX
        and format_of("m.ckpt") is None
    )
    with pytest.raises(ValueError, match="is not a onnx file"):
        dataclasses.replace(profiles.FULL, suffix="full.pb")


def test_old_and_unknown_names_are_refused_with_the_right_one() -> None:
    with pytest.raises(ProfileError, match=r"'digikam_tf' is now called 'digikam' .*profiles=\[digikam\]"):
        profile("digikam_tf")
    with pytest.raises(ProfileError, match="did you mean 'full'"):
        profile("ful")


def test_install_refuses_files_by_the_records_format(tmp_path: Path) -> None:
    onnx_file, other = tmp_path / "m.full.onnx", tmp_path / "m.tflite"
    for f in (onnx_file, other):
        f.write_bytes(b"x")
    with pytest.raises(InstallError, match="an ONNX file; .*install the <name>.digikam.pb"):
        check_model(onnx_file)
    with pytest.raises(InstallError, match=r"expected the <name>\.digikam\.pb of `iqs export`"):
        check_model(other)


def test_a_new_profile_is_its_record_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile added to PROFILES (here: the full graph under another name) is exported, verified with
    onnxruntime, tagged and read by OpenCV's output rule without any other file knowing it."""
    extra = profiles.Profile(
        "full_copy",
        "copy.onnx",
        "full",
        ONNX,
        "a test consumer",
        opencv_output="score",
        card="a copy, opset {opset}.",
    )
    monkeypatch.setitem(profiles.PROFILES, extra.name, extra)
    model = tiny_quality_model()
    files = export.export_model(model, model.meta, tmp_path, "tiny", ["full_copy"], 17, "test")
    path = files["full_copy"]
    assert path == tmp_path / "tiny.copy.onnx" and path.is_file()
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["iqs_profile"] == "full_copy"
    assert output_layer(path) == "score"
    card = files["card"].read_text(encoding="utf-8")
    assert "tiny.copy.onnx" in card
    # the card describes it from its record, next to the others
    assert "- **full_copy** profile (`<name>.copy.onnx`, when exported): a copy, opset 17." in card


def test_the_model_card_describes_every_profile_from_its_record() -> None:
    from iqs.report.model_card import io_contract

    model = tiny_quality_model("distribution")
    lines = [line for line in io_contract(model.meta) if line.startswith("- **")]
    assert [line.split("**")[1] for line in lines] == list(profiles.PROFILES)
    digikam, full, contract = lines
    assert "(`<name>.digikam.pb`): the file digiKam loads" in digikam
    assert "Checked with readNetFromTensorflow in OpenCV 4.6-4.12 against PyTorch" in digikam
    assert "`dist` (Nx10" in full and "opset ?" in full and "when exported" in contract
    assert "`dist`" not in "".join(io_contract(tiny_quality_model("regression").meta))
    assert profiles.release_span(["4.10.0.84"]) == "4.10" and profiles.release_span([]) == "no release"
    assert profiles.release_span(["5.0.0.93", "4.6.0.66", "4.12.0.88"]) == "4.6-5.0"
