"""Export profiles are records (iqs.deploy.export.profiles): every other file asks the record."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
import pytest
from tests.conftest import tiny_quality_model

from iqs.deploy.compat.opencv_matrix import output_layer
from iqs.deploy.digikam.files import check_model
from iqs.deploy.digikam.paths import InstallError
from iqs.deploy.export import exporter as export
from iqs.deploy.export import profiles
from iqs.deploy.export.profiles import ONNX, TF_GRAPHDEF, ProfileError, format_of, profile


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
    extra = profiles.Profile("full_copy", "copy.onnx", "full", ONNX, "a test consumer", opencv_output="score")
    monkeypatch.setitem(profiles.PROFILES, extra.name, extra)
    model = tiny_quality_model()
    files = export.export_model(model, model.meta, tmp_path, "tiny", ["full_copy"], 17, "test")
    path = files["full_copy"]
    assert path == tmp_path / "tiny.copy.onnx" and path.is_file()
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["iqs_profile"] == "full_copy"
    assert output_layer(path) == "score"
    assert "tiny.copy.onnx" in files["card"].read_text(encoding="utf-8")
