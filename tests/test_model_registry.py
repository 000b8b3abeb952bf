"""The shipped model is a registered model: export registers, export and predict resolve models:/ URIs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image
from skimage import data

from iqs.core.config import compose
from iqs.deploy.export import exporter as export
from iqs.deploy.predict import command as predict_cli
from iqs.deploy.predict import scorer as predict
from iqs.tracking.model_registry import RegistryError, download_model

NAME = "iqs-digikam"


def tiny_checkpoint(path: Path, seed: int) -> Path:
    from iqs.models import build_quality_model

    torch.manual_seed(seed)
    cfg = {
        "backbone": {"name": "test_efficientnet", "weights": "none"},
        "head": {"name": "regression"},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    model = build_quality_model(cfg).eval()
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "iqs_meta": dict(model.meta)}, path)
    return path


def scores(csv_path: Path) -> dict[str, float]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        return {Path(r["path"]).name: float(r["score"]) for r in csv.DictReader(f)}


def outputs(onnx_path: Path) -> np.ndarray:
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 299, 299)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(["score"], {"input": x})[0]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for i, img in enumerate([data.astronaut(), data.coffee(), data.chelsea()]):
        Image.fromarray(img).save(root / f"p{i}.jpg", quality=90)
    return root


@pytest.mark.slow
def test_register_then_predict_and_reexport_by_alias(
    tmp_path: Path, photos: Path, monkeypatch, migrated_db: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # default out_dirs and mlruns/ stay in tmp_path
    (tmp_path / "store").mkdir()
    shutil.copy(migrated_db, tmp_path / "store" / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    store = [f"logger.tracking_uri={uri}"]
    first = tiny_checkpoint(tmp_path / "first.ckpt", seed=0)
    assert (
        export.main([f"checkpoint={first}", "out_dir=v1", f"register={NAME}", "alias=shipped", *store]) == 0
    )
    client = MlflowClient(uri)
    v1 = client.get_model_version_by_alias(NAME, "shipped")
    assert int(v1.version) == 1 and v1.tags["backbone"] == "test_efficientnet"
    folder, _ = download_model(f"models:/{NAME}@shipped", uri, tmp_path / "dl1")
    names = {"first.digikam.pb", "first.full.onnx", "MODEL_CARD.md", "first.ckpt"}
    assert {p.name for p in folder.iterdir()} == names
    for name in names - {"first.ckpt"}:  # the version holds exactly the exported files
        assert (folder / name).read_bytes() == (tmp_path / "v1" / name).read_bytes()

    # predict by alias and by version = predict with the file
    by_path, by_alias, by_version = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    assert (
        predict_cli.main([str(photos), "-o", str(by_path), f"model={tmp_path / 'v1' / 'first.full.onnx'}"])
        == 0
    )
    assert predict_cli.main([str(photos), "-o", str(by_alias), f"model=models:/{NAME}@shipped", *store]) == 0
    assert predict_cli.main([str(photos), "-o", str(by_version), f"model=models:/{NAME}/1", *store]) == 0
    assert scores(by_path) == scores(by_alias) == scores(by_version) and len(scores(by_path)) == 3

    # a second model moves the alias; version 1 keeps its own files
    second = tiny_checkpoint(tmp_path / "second.ckpt", seed=1)
    assert (
        export.main([f"checkpoint={second}", "out_dir=v2", f"register={NAME}", "alias=shipped", *store]) == 0
    )
    assert int(client.get_model_version_by_alias(NAME, "shipped").version) == 2
    old, _ = download_model(f"models:/{NAME}/1", uri, tmp_path / "dl-old")
    np.testing.assert_array_equal(
        outputs(old / "first.full.onnx"), outputs(tmp_path / "v1" / "first.full.onnx")
    )
    assert not np.allclose(outputs(old / "first.full.onnx"), outputs(tmp_path / "v2" / "second.full.onnx"))

    # predict takes a version number too; export accepts the alias: it re-exports the registered checkpoint
    resolved = predict.resolve_model(f"models:/{NAME}/2", tmp_path / "r", compose("predict", store))
    np.testing.assert_array_equal(outputs(resolved), outputs(tmp_path / "v2" / "second.full.onnx"))
    assert (
        export.main([f"checkpoint=models:/{NAME}@shipped", "out_dir=again", "profiles=[full]", *store]) == 0
    )
    np.testing.assert_allclose(
        outputs(tmp_path / "again" / "second.full.onnx"),
        outputs(tmp_path / "v2" / "second.full.onnx"),
        atol=1e-6,
    )
    assert (
        f"models:/{NAME}@shipped (version 2 of {NAME})" in (tmp_path / "again" / "MODEL_CARD.md").read_text()
    )


@pytest.mark.slow
def test_register_an_exported_run_links_the_version_to_it(
    tmp_path: Path, monkeypatch, migrated_db: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("runs", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp)
    client.log_artifact(
        run.info.run_id, str(tiny_checkpoint(tmp_path / "best-epoch001.ckpt", 0)), "checkpoints"
    )
    client.set_terminated(run.info.run_id)
    args = [f"run_id={run.info.run_id}", f"register={NAME}", "profiles=[full]", f"logger.tracking_uri={uri}"]
    assert export.main(args) == 0
    version = client.get_model_version(NAME, "1")
    assert version.run_id == run.info.run_id and not client.get_registered_model(NAME).aliases
    stem = f"iqs-{run.info.run_id[:8]}"
    folder, _ = download_model(f"models:/{NAME}/1", uri, tmp_path / "dl")
    assert {p.name for p in folder.iterdir()} == {f"{stem}.full.onnx", "MODEL_CARD.md", f"{stem}.ckpt"}


@pytest.mark.slow
def test_unknown_names_aliases_and_versions_say_what_exists(
    tmp_path: Path, capsys, migrated_db: Path
) -> None:
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.create_registered_model(NAME)
    with pytest.raises(RegistryError, match=f"no registered model 'other'.*registered: {NAME}"):
        download_model("models:/other@shipped", uri, tmp_path / "x")
    with pytest.raises(RegistryError, match="has no alias 'shipped' \\(aliases: none; versions: none\\)"):
        download_model(f"models:/{NAME}@shipped", uri, tmp_path / "x")
    with pytest.raises(RegistryError, match="models:/<name>@<alias> or models:/<name>/<version>"):
        download_model(f"models:/{NAME}", uri, tmp_path / "x")
    store = f"logger.tracking_uri={uri}"
    assert export.main([f"checkpoint=models:/{NAME}/7", store]) == 2
    assert "has no version '7'" in capsys.readouterr().out
    assert export.main([f"checkpoint={tmp_path / 'm.ckpt'}", "alias=shipped", store]) == 2
    assert "alias=shipped needs register=" in capsys.readouterr().out
