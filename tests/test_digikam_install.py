"""`iqs digikam install|restore` against a fake digiKam data folder laid out as digiKam's sources read it.

Layout (see the module docstring of iqs.deploy.digikam_install for the source lines):
- <user data>/digikam/facesengine/weights_inceptionv3_299.pb: where 8.0-8.4 load the aesthetic model
  (aesthetic_detector.cpp:143-160 in 8.1.0) and where the downloader writes (filesdownloader.cpp:485-491).
- <system data>/digikam/dnnmodels/dnnmodels.conf: 8.5+'s model list (dnnmodelmanager.cpp `getSettings`),
  read as QSettings INI with the keys `loadConfig` reads. Group names and the face model's values are
  illustrative; the installer finds the aesthetic group by `Usage`, as digiKam does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.conftest import tiny_quality_model

from iqs import cli
from iqs.deploy import digikam_install as dk
from iqs.deploy import export
from iqs.deploy.preprocess import digikam_blob

STOCK_CONF = """\
; digiKam DNN models (test copy)
[yunet]
Application=digikam
Usage=face_detection
DisplayName=YuNet
FileName=face_detection_yunet_2023mar.onnx
DownloadPath=facesengine/
SHA256=0000000000000000000000000000000000000000000000000000000000000001
FileSize=232589
LoaderType=yunet
MinVersion=8.5.0

[aesthetic]
Application=digikam,showfoto
Usage=aesthetics
DisplayName=Aesthetic detector
FileName=weights_inceptionv3_299.pb
DownloadPath=aestheticdetector/
SHA256=8923e3daff71c07533b9023ef32c69d8c058d1e0931d76d8b81241a201138538
FileSize=88007527
LoaderType=net
MeanValueToSubtract=0, 0, 0
ImageSize=299
MinVersion=8.5.0
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A user data folder with a stock-like model, a system one with the 8.5+ config; env points Qt there."""
    user, system = tmp_path / "home" / ".local" / "share", tmp_path / "usr" / "share"
    faces = user / "digikam" / "facesengine"
    faces.mkdir(parents=True)
    (faces / dk.STOCK_PB).write_bytes(b"stock inception graph" * 1000)
    (faces / "face_detection_yunet_2023mar.onnx").write_bytes(b"yunet")
    monkeypatch.setenv("XDG_DATA_HOME", str(user))
    monkeypatch.setenv("XDG_DATA_DIRS", str(system))
    monkeypatch.delenv(dk.CONF_ENV, raising=False)
    return user, system


def _with_conf(system: Path) -> Path:
    conf = system / dk.STOCK_CONF
    conf.parent.mkdir(parents=True)
    conf.write_text(STOCK_CONF)
    return conf


@pytest.fixture(scope="module")
def digikam_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tiny_quality_model()
    out = tmp_path_factory.mktemp("export")
    return export.export_model(model, model.meta, out, "iqs-1234abcd", ["digikam", "full"], 17, "test")[
        "digikam"
    ]


def test_legacy_install_backs_up_replaces_and_restores(xdg, tmp_path: Path, capsys) -> None:
    user, _ = xdg
    target = user / "digikam" / "facesengine" / dk.STOCK_PB
    stock_bytes = target.read_bytes()
    model = tmp_path / "iqs-1234abcd.digikam_tf.pb"
    model.write_bytes(b"our frozen graph")

    assert cli.main(["digikam", "install", str(model), "--digikam-version", "8.2", "--dry-run"]) == 0
    assert "would back up" in capsys.readouterr().out
    assert target.read_bytes() == stock_bytes and not (target.parent / dk.BACKUP_DIR).exists()

    assert cli.main(["digikam", "install", str(model), "--digikam-version", "8.2"]) == 0
    out = capsys.readouterr().out
    assert "NOT the stock model" in out and "Download Required Files" in out
    assert target.read_bytes() == model.read_bytes()
    backup = target.parent / dk.BACKUP_DIR / dk.STOCK_PB
    assert backup.read_bytes() == stock_bytes
    record = json.loads((target.parent / dk.BACKUP_DIR / dk.MANIFEST).read_text())
    assert record["stock_sha256"] == hashlib.sha256(stock_bytes).hexdigest()
    assert record["installed_sha256"] == _sha(model)

    newer = tmp_path / "iqs-5678efgh.digikam_tf.pb"
    newer.write_bytes(b"our next frozen graph")
    assert cli.main(["digikam", "install", str(newer), "--digikam-version", "8.4"]) == 0
    assert target.read_bytes() == newer.read_bytes() and backup.read_bytes() == stock_bytes

    assert cli.main(["digikam", "restore"]) == 0
    assert target.read_bytes() == stock_bytes
    assert not (target.parent / dk.BACKUP_DIR).exists()
    assert (target.parent / "face_detection_yunet_2023mar.onnx").read_bytes() == b"yunet"


def test_legacy_recognises_digikams_stock_file(xdg, tmp_path: Path, monkeypatch, capsys) -> None:
    user, _ = xdg
    target = user / "digikam" / "facesengine" / dk.STOCK_PB
    monkeypatch.setattr(dk, "STOCK_PB_SHA256", _sha(target))  # the real one is 88 MB
    model = tmp_path / "m.pb"
    model.write_bytes(b"x")
    assert cli.main(["digikam", "install", str(model), "--digikam-version", "8.0"]) == 0
    assert "(digiKam stock model" in capsys.readouterr().out
    assert json.loads((target.parent / dk.BACKUP_DIR / dk.MANIFEST).read_text())["stock_is_digikams"]


def test_legacy_refuses_to_clobber_a_file_without_backup(xdg, tmp_path: Path, capsys) -> None:
    user, _ = xdg
    target = user / "digikam" / "facesengine" / dk.STOCK_PB
    model = tmp_path / "m.pb"
    model.write_bytes(b"ours")
    assert cli.main(["digikam", "install", str(model), "--digikam-version", "8.2"]) == 0
    target.write_bytes(b"someone else's model")  # neither ours nor the backed-up one
    capsys.readouterr()
    assert cli.main(["digikam", "install", str(model), "--digikam-version", "8.2"]) == 2
    assert "no backup" in capsys.readouterr().err
    assert target.read_bytes() == b"someone else's model"
    assert cli.main(["digikam", "restore"]) == 2  # restore would clobber it too
    assert target.read_bytes() == b"someone else's model"


def test_legacy_with_no_stock_file_restores_to_nothing(xdg, tmp_path: Path) -> None:
    user, _ = xdg
    target = user / "digikam" / "facesengine" / dk.STOCK_PB
    target.unlink()
    model = tmp_path / "m.pb"
    model.write_bytes(b"ours")
    assert cli.main(["digikam", "install", str(model), "--digikam-version", "8.2"]) == 0
    assert target.read_bytes() == b"ours"
    assert cli.main(["digikam", "restore"]) == 0
    assert not target.exists()


def test_wrong_files_are_refused_with_the_fix(xdg, tmp_path: Path, digikam_onnx: Path, capsys) -> None:
    assert cli.main(["digikam", "install", str(digikam_onnx), "--digikam-version", "8.2"]) == 2
    assert "profiles=[digikam_tf]" in capsys.readouterr().err
    full = digikam_onnx.with_name(digikam_onnx.name.replace(".digikam.", ".full."))
    assert cli.main(["digikam", "install", str(full), "--digikam-version", "8.5"]) == 2
    assert "'full' export" in capsys.readouterr().err
    assert cli.main(["digikam", "install", str(tmp_path / "nope.onnx"), "--digikam-version", "8.5"]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.main(["digikam", "install", str(digikam_onnx), "--digikam-version", "7.5"]) == 2
    assert "came with 8.0" in capsys.readouterr().err


def test_version_detection(xdg, tmp_path: Path) -> None:
    user, system = xdg
    assert dk.detect_version(dk.data_dirs()) == dk.LEGACY  # a models folder, no dnnmodels.conf
    _with_conf(system)
    assert dk.detect_version(dk.data_dirs()) == dk.DNNMODELS
    with pytest.raises(dk.InstallError, match="Start digiKam once"):
        dk.detect_version(dk.data_dirs(tmp_path / "no-digikam-here"))


def test_version_parsing() -> None:
    assert dk.parse_version("8.2") == dk.LEGACY and dk.parse_version("8.4.1") == dk.LEGACY
    assert dk.parse_version("8.5") == dk.DNNMODELS and dk.parse_version("8.5+") == dk.DNNMODELS
    assert dk.parse_version("9.0") == dk.DNNMODELS
    with pytest.raises(dk.InstallError, match="such as 8.2"):
        dk.parse_version("latest")


def test_dnnmodels_install_writes_a_config_digikam_loads(xdg, digikam_onnx: Path, capsys) -> None:
    user, system = xdg
    stock_conf = _with_conf(system)
    stock_text = stock_conf.read_text()
    stock_model = (user / "digikam" / "facesengine" / dk.STOCK_PB).read_bytes()
    assert dk.detect_version(dk.data_dirs()) == dk.DNNMODELS

    assert cli.main(["digikam", "install", str(digikam_onnx)]) == 0  # auto: the config says 8.5+
    out = capsys.readouterr().out
    conf = user / "iqs-digikam" / "dnnmodels.conf"
    assert f"{dk.CONF_ENV}={conf}" in out
    assert stock_conf.read_text() == stock_text  # no stock file touched
    assert (user / "digikam" / "facesengine" / dk.STOCK_PB).read_bytes() == stock_model

    # what digiKam 8.5+ does with DIGIKAM_DNN_MODEL_CONF=<conf>: the group with Usage=aesthetics,
    # FileName in the first digikam/facesengine folder, loaded only if its size equals FileSize
    groups = dk.ini_groups(conf.read_text())
    assert groups["yunet"] == dk.ini_groups(stock_text)["yunet"]
    aesthetic = groups[dk.aesthetic_group(groups, conf)]
    path = dk.locate(dk.MODELS_SUBDIR, dk.data_dirs(), want_dir=True) / aesthetic["FileName"]
    assert path.stat().st_size == int(aesthetic["FileSize"]) and _sha(path) == aesthetic["SHA256"]
    assert aesthetic["LoaderType"] == "net" and aesthetic["MeanValueToSubtract"] == "0, 0, 0"
    assert conf.read_text().startswith("; digiKam DNN models (test copy)\n")
    net = cv2.dnn.readNet(str(path))  # LoaderType=net: cv::dnn::readNet picks ONNX by the extension
    photo = (np.random.default_rng(0).uniform(0, 255, (400, 600, 3))).astype(np.uint8)
    net.setInput(digikam_blob(photo))
    assert net.forward().shape == (1, 3)

    assert cli.main(["digikam", "install", str(digikam_onnx)]) == 0  # again: idempotent
    assert cli.main(["digikam", "restore", "--dry-run"]) == 0
    assert conf.exists() and path.exists()
    assert cli.main(["digikam", "restore"]) == 0
    assert f"unset {dk.CONF_ENV}" in capsys.readouterr().out
    assert not conf.exists() and not path.exists() and stock_conf.read_text() == stock_text


def test_dnnmodels_refuses_without_a_config_or_over_another_file(xdg, digikam_onnx: Path, capsys) -> None:
    user, system = xdg
    assert cli.main(["digikam", "install", str(digikam_onnx), "--digikam-version", "8.6"]) == 2
    assert "dnnmodels.conf" in capsys.readouterr().err
    _with_conf(system)
    clash = user / "digikam" / "facesengine" / digikam_onnx.name
    clash.write_bytes(b"a different file with our name")
    assert cli.main(["digikam", "install", str(digikam_onnx)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert clash.read_bytes() == b"a different file with our name"


def test_data_dir_replaces_the_search_list(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "elsewhere"))
    root = tmp_path / "appimage-data"
    model = tmp_path / "m.pb"
    model.write_bytes(b"ours")
    args = ["digikam", "install", str(model), "--digikam-version", "8.2", "--data-dir", str(root)]
    assert cli.main(args) == 0
    assert (root / "digikam" / "facesengine" / dk.STOCK_PB).read_bytes() == b"ours"
    assert not (tmp_path / "elsewhere").exists()


def test_models_dir_option(xdg, tmp_path: Path) -> None:
    models = tmp_path / "my-models"
    model = tmp_path / "m.pb"
    model.write_bytes(b"ours")
    assert (
        cli.main(["digikam", "install", str(model), "--digikam-version", "8.2", "--models-dir", str(models)])
        == 0
    )
    assert (models / dk.STOCK_PB).read_bytes() == b"ours"
    assert cli.main(["digikam", "restore", "--models-dir", str(models)]) == 0
    assert not (models / dk.STOCK_PB).exists()
