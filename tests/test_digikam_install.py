"""`iqs digikam install|restore` against fake digiKam data and config folders laid out as digiKam's sources read
them, and the installed file loaded the way digiKam loads it.

Layout (iqs.deploy.digikam.install and digikam_paths cite the source lines):
- <models folder>/weights_inceptionv3_299.pb: what every digiKam 8.0-9.2 loads with readNetFromTensorflow.
  The models folder: 8.0-8.4 the first existing <data>/digikam/facesengine of Qt's GenericDataLocation list;
  8.5 the user's (writable) one; 8.6+ `facesEnginePath` in [System] of <config>/digikam_systemrc, if set.
- <system data>/digikam/dnnmodels/dnnmodels.conf: 8.5+'s model list for the downloader (QSettings INI).
  Group names and the face model's values are illustrative; the installer finds the aesthetic group by
  `Usage`, as digiKam does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tensorboard.compat.proto import graph_pb2
from tests.conftest import tiny_quality_model

from iqs import cli
from iqs.deploy.compat.command import compat_photos, predict_reference, write_photos
from iqs.deploy.compat.opencv_matrix import run_matrix
from iqs.deploy.digikam import install as dk
from iqs.deploy.export import exporter as export

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


def _pb(path: Path, tag: str = "ours") -> Path:
    """A small valid frozen graph (one Placeholder); `tag` makes its bytes differ."""
    graph = graph_pb2.GraphDef()
    graph.node.add(name=f"input_{tag}", op="Placeholder")
    graph.node.add(name="probs", op="Softmax", input=[f"input_{tag}"])
    path.write_bytes(graph.SerializeToString())
    return path


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A user data folder with a stock-like model, a system one for the 8.5+ config; env points Qt there."""
    user, system = tmp_path / "home" / ".local" / "share", tmp_path / "usr" / "share"
    faces = user / "digikam" / "facesengine"
    faces.mkdir(parents=True)
    (faces / dk.STOCK_PB).write_bytes(b"stock inception graph" * 1000)
    (faces / "face_detection_yunet_2023mar.onnx").write_bytes(b"yunet")
    monkeypatch.setenv("XDG_DATA_HOME", str(user))
    monkeypatch.setenv("XDG_DATA_DIRS", str(system))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.delenv(dk.CONF_ENV, raising=False)
    return user, system


def _with_conf(system: Path) -> Path:
    conf = system / dk.STOCK_CONF
    conf.parent.mkdir(parents=True)
    conf.write_text(STOCK_CONF)
    return conf


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real default export (the .pb digiKam loads and the full ONNX of iqs predict) of a tiny model."""
    model = tiny_quality_model()
    out = tmp_path_factory.mktemp("export")
    return export.export_model(model, model.meta, out, "iqs-1234abcd", ["digikam", "full"], 17, "test")


def test_legacy_install_backs_up_replaces_and_restores(xdg, tmp_path: Path, capsys) -> None:
    user, _ = xdg
    target = user / "digikam" / "facesengine" / dk.STOCK_PB
    stock_bytes = target.read_bytes()
    model = _pb(tmp_path / "iqs-1234abcd.digikam.pb")

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

    newer = _pb(tmp_path / "iqs-5678efgh.digikam.pb", "next")
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
    model = _pb(tmp_path / "m.pb")
    assert cli.main(["digikam", "install", str(model), "--digikam-version", "8.0"]) == 0
    assert "(digiKam stock model" in capsys.readouterr().out
    assert json.loads((target.parent / dk.BACKUP_DIR / dk.MANIFEST).read_text())["stock_is_digikams"]


def test_legacy_refuses_to_clobber_a_file_without_backup(xdg, tmp_path: Path, capsys) -> None:
    user, _ = xdg
    target = user / "digikam" / "facesengine" / dk.STOCK_PB
    model = _pb(tmp_path / "m.pb")
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
    model = _pb(tmp_path / "m.pb")
    assert cli.main(["digikam", "install", str(model), "--digikam-version", "8.2"]) == 0
    assert target.read_bytes() == model.read_bytes()
    assert cli.main(["digikam", "restore"]) == 0
    assert not target.exists()


@pytest.mark.slow
def test_onnx_and_other_files_are_refused_in_one_line(xdg, tmp_path: Path, exported, capsys) -> None:
    user, system = xdg
    _with_conf(system)
    before = {p: p.read_bytes() for p in (user / "digikam" / "facesengine").iterdir()}
    onnx_file = exported["full"]
    for version in ("8.2", "8.5", "9.2", "auto"):
        args = ["digikam", "install", str(onnx_file)] + (
            [] if version == "auto" else ["--digikam-version", version]
        )
        assert cli.main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "reads only weights_inceptionv3_299.pb through its TensorFlow importer" in err
    text = tmp_path / "notes.pb"
    text.write_bytes(b"\xff\xfe not a graph at all")
    assert cli.main(["digikam", "install", str(text), "--digikam-version", "8.2"]) == 2
    assert "not a TensorFlow frozen graph" in capsys.readouterr().err
    assert cli.main(["digikam", "install", str(tmp_path / "nope.pb"), "--digikam-version", "8.5"]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.main(["digikam", "install", str(exported["digikam"]), "--digikam-version", "7.5"]) == 2
    assert "came with 8.0" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (user / "digikam" / "facesengine").iterdir()} == before


def test_version_detection(xdg, tmp_path: Path) -> None:
    user, system = xdg
    assert dk.detect_version(dk.data_dirs()) == dk.LEGACY  # a models folder, no dnnmodels.conf
    _with_conf(system)
    assert dk.detect_version(dk.data_dirs()) == dk.V86
    with pytest.raises(dk.InstallError, match="Start digiKam once"):
        dk.detect_version(dk.data_dirs(tmp_path / "no-digikam-here"))


def test_version_parsing() -> None:
    assert dk.parse_version("8.2") == dk.LEGACY and dk.parse_version("8.4.1") == dk.LEGACY
    assert dk.parse_version("8.5") == dk.V85 and dk.parse_version("8.5.0") == dk.V85
    assert dk.parse_version("8.6") == dk.V86 and dk.parse_version("9.2") == dk.V86
    assert dk.parse_version("8.5+") == dk.V86  # "8.5 or later": facesEnginePath is honoured when set
    with pytest.raises(dk.InstallError, match="such as 8.2"):
        dk.parse_version("latest")


def _systemrc(config: Path, faces_path: Path) -> None:
    config.mkdir(parents=True, exist_ok=True)
    (config / "digikam_systemrc").write_text(
        f"[General]\nLastVersion=9.2.0\n\n[System]\nenableAesthetic=true\nfacesEnginePath={faces_path}\n"
        "softwareOpenGL=false\n"
    )


def test_models_folder_by_version(xdg, tmp_path: Path) -> None:
    """Each version's own rule: 8.2 finds the first existing folder (here the system one, since the user's
    is removed), 8.5 takes the user's writable one, 8.6+ `facesEnginePath` once set."""
    user, system = xdg
    dirs = dk.data_dirs()
    (system / dk.MODELS_SUBDIR).mkdir(parents=True)
    assert dk.models_dir(dk.LEGACY, dirs)[0] == user / dk.MODELS_SUBDIR  # both exist: the user's first
    moved = tmp_path / "user-data-moved"
    (user / dk.MODELS_SUBDIR).rename(moved)
    assert dk.models_dir(dk.LEGACY, dirs)[0] == system / dk.MODELS_SUBDIR
    assert dk.models_dir(dk.V85, dirs)[0] == user / dk.MODELS_SUBDIR
    assert dk.models_dir(dk.V86, dirs)[0] == user / dk.MODELS_SUBDIR  # no digikam_systemrc
    custom = tmp_path / "models on a big disk"
    _systemrc(tmp_path / "home" / ".config", custom)
    assert dk.models_dir(dk.V86, dirs)[0] == custom
    assert dk.models_dir(dk.V85, dirs)[0] == user / dk.MODELS_SUBDIR  # 8.5 has no such setting


def _digikam_opens(version: str, data_dirs: list[Path], config: Path) -> Path:
    """The path digiKam `version` passes to readNetFromTensorflow, written from its sources independently of
    the installer: aesthetic_detector.cpp `s_loadModel` + systemsettings.cpp (../shared/digikam.md)."""
    major, minor = (int(v) for v in version.split(".")[:2])
    if (major, minor) <= (8, 4):  # QStandardPaths::locate(GenericDataLocation, "digikam/facesengine", Dir)
        folder = next(
            d / "digikam" / "facesengine" for d in data_dirs if (d / "digikam" / "facesengine").is_dir()
        )
    else:  # writableLocation(GenericDataLocation) + "/digikam/facesengine", or 8.6+'s facesEnginePath
        folder = data_dirs[0] / "digikam" / "facesengine"
        rc = config / "digikam_systemrc"
        if (major, minor) >= (8, 6) and rc.is_file():
            group = None
            for line in rc.read_text().splitlines():
                if line.startswith("["):
                    group = line.strip("[]")
                elif group == "System" and line.startswith("facesEnginePath=") and line.split("=", 1)[1]:
                    folder = Path(line.split("=", 1)[1])
    return folder / "weights_inceptionv3_299.pb"


@pytest.mark.slow
@pytest.mark.compat
@pytest.mark.parametrize("version", ["8.2", "8.5", "9.2"])
def test_digikam_load_path_replayed(version: str, xdg, tmp_path: Path, exported, capsys) -> None:
    """install on a stock tree; take the file from the path digiKam would open; load it with
    readNetFromTensorflow in OpenCV 4.6/4.10/4.12 (one net, digiKam's preprocessing); its classes are
    `iqs predict`'s on real photos; restore brings the stock bytes back."""
    user, system = xdg
    config = tmp_path / "home" / ".config"
    stock = (user / dk.MODELS_SUBDIR / dk.STOCK_PB).read_bytes()
    if version != "8.2":
        stock_conf = _with_conf(system)
    if version == "9.2":  # the user moved the model files (Settings > System), digiKam moved the stock file
        custom = tmp_path / "my models"
        custom.mkdir()
        (custom / dk.STOCK_PB).write_bytes(stock)
        _systemrc(config, custom)
    pb = exported["digikam"]
    assert cli.main(["digikam", "install", str(pb), "--digikam-version", version]) == 0
    out = capsys.readouterr().out
    opened = _digikam_opens(version, dk.data_dirs(), config)
    assert opened.read_bytes() == pb.read_bytes()
    if version != "8.2":
        conf = user / "iqs-digikam" / "dnnmodels.conf"
        assert f"export {dk.CONF_ENV}={conf}" in out
        group = dk.ini_groups(conf.read_text())["aesthetic"]
        assert group["FileName"] == dk.STOCK_PB  # the detector opens it by this name
        assert int(group["FileSize"]) == opened.stat().st_size and group["SHA256"] == _sha(opened)
        assert dk.ini_groups(conf.read_text())["yunet"] == dk.ini_groups(STOCK_CONF)["yunet"]
        assert stock_conf.read_text() == STOCK_CONF  # no stock file touched
    photos = write_photos(compat_photos(12, seed=2), tmp_path / "photos")
    predict_cls, _ = predict_reference(exported["full"], photos)
    runs = run_matrix([opened], photos, releases=("4.6.0.66", "4.10.0.84", "4.12.0.88"), progress=False)
    for release, by_model in runs.items():
        run = by_model[str(opened)]
        assert run.loads, (release, run.error)
        assert run.classes == predict_cls.tolist(), release
    assert cli.main(["digikam", "restore", "--digikam-version", version]) == 0
    assert opened.read_bytes() == stock
    assert not (user / "iqs-digikam" / "dnnmodels.conf").exists()
    assert not (opened.parent / dk.BACKUP_DIR).exists()


def test_dnnmodels_conf_copy_refuses_a_renamed_aesthetic_file(xdg, tmp_path: Path, capsys) -> None:
    """A config whose aesthetic group names another file (an earlier iqs ONNX install) is not copied:
    the detector opens weights_inceptionv3_299.pb whatever it says."""
    user, system = xdg
    conf = _with_conf(system)
    conf.write_text(STOCK_CONF.replace("FileName=weights_inceptionv3_299.pb", "FileName=iqs-1.digikam.onnx"))
    model = _pb(tmp_path / "m.pb")
    assert cli.main(["digikam", "install", str(model), "--digikam-version", "9.2"]) == 2
    assert "opens weights_inceptionv3_299.pb by name" in capsys.readouterr().err
    assert (user / dk.MODELS_SUBDIR / dk.STOCK_PB).read_bytes() == b"stock inception graph" * 1000


def test_dnnmodels_refuses_without_a_config(xdg, tmp_path: Path, capsys) -> None:
    model = _pb(tmp_path / "m.pb")
    assert cli.main(["digikam", "install", str(model), "--digikam-version", "8.6"]) == 2
    assert "dnnmodels.conf" in capsys.readouterr().err


def test_data_dir_replaces_the_search_list(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "elsewhere"))
    root = tmp_path / "appimage-data"
    model = _pb(tmp_path / "m.pb")
    args = ["digikam", "install", str(model), "--digikam-version", "8.2", "--data-dir", str(root)]
    assert cli.main(args) == 0
    assert (root / "digikam" / "facesengine" / dk.STOCK_PB).read_bytes() == model.read_bytes()
    assert not (tmp_path / "elsewhere").exists()


def test_models_dir_option(xdg, tmp_path: Path) -> None:
    models = tmp_path / "my-models"
    model = _pb(tmp_path / "m.pb")
    assert (
        cli.main(["digikam", "install", str(model), "--digikam-version", "8.2", "--models-dir", str(models)])
        == 0
    )
    assert (models / dk.STOCK_PB).read_bytes() == model.read_bytes()
    assert cli.main(["digikam", "restore", "--models-dir", str(models)]) == 0
    assert not (models / dk.STOCK_PB).exists()
