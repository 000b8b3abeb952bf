"""digiKam parity: the exported file, run the way digiKam runs it, agrees with the project's PyTorch model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tensorboard.compat.proto import graph_pb2
from tests.conftest import tiny_quality_model

from iqs.core.preprocess import DigikamToBackbone, digikam_blob
from iqs.deploy.compat.command import compat_photos, fixed_seed_model
from iqs.deploy.compat.opencv_matrix import run_on_blobs
from iqs.deploy.export import exporter as export
from iqs.models.checkpoints import CheckpointError, read_checkpoint

# the photos live in iqs.deploy.compat.command (make compat uses them too); other tests import them from here
demo_photos = compat_photos


def make_model(head: str, blobs: np.ndarray | None = None, seed: int = 0, size: int = 224):
    """Real packaged lite0 backbone, random-but-fixed head; score-head thresholds at score terciles. `size`:
    the backbone's input (the graph resizes digiKam's 299 px to it); below 224 for tests about the head."""
    cfg = {
        "backbone": {"name": "tf_efficientnet_lite0", "weights": "packaged", "input_size": [size, size]},
        "head": {"name": head},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    return fixed_seed_model(cfg, blobs, seed)


def save_checkpoint(model, path: Path) -> Path:
    state = {f"model.{k}": v for k, v in model.state_dict().items()}  # Lightning's attribute prefix
    torch.save({"state_dict": state, "iqs_meta": dict(model.meta), "epoch": 3}, path)
    return path


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return compat_photos()


@pytest.mark.slow
@pytest.mark.parametrize("head", ["regression", "classification"])
def test_digikam_parity(head: str, photos: list[np.ndarray], tmp_path: Path) -> None:
    blobs = np.concatenate([digikam_blob(p) for p in photos])
    assert len(blobs) >= 50
    model = make_model(head, blobs)
    ckpt = save_checkpoint(model, tmp_path / "best.ckpt")
    out_dir = tmp_path / "exports"
    args = [f"checkpoint={ckpt}", f"out_dir={out_dir}", "profiles=[digikam,full,contract_onnx]"]
    args.append("verify_opencv=[4.10.0.84]")  # checked on export in the release this test runs it in
    assert export.main(args) == 0
    pb_file, contract_file = out_dir / "best.digikam.pb", out_dir / "best.contract.onnx"
    full_file = out_dir / "best.full.onnx"

    # the contract, as digiKam's loader sees it: one NHWC placeholder fed with digiKam's NCHW blob, 1x3 out
    graph = graph_pb2.GraphDef.FromString(pb_file.read_bytes())
    (placeholder,) = [n for n in graph.node if n.op == "Placeholder"]
    assert [d.size for d in placeholder.attr["shape"].shape.dim] == [1, 299, 299, 3]
    proto = onnx.load(str(contract_file))
    dims = [
        [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (proto.graph.input[0], proto.graph.output[0])
    ]
    assert dims == [[1, 3, 299, 299], [1, 3]]
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["iqs_meta"])
    assert meta["thresholds"] == model.meta["thresholds"] and meta["head"] == head

    adapt = DigikamToBackbone.from_meta(model.meta)
    with torch.no_grad():
        ref = model(adapt(torch.from_numpy(blobs)))
    ref_probs, ref_cls = ref["probs"].numpy(), ref["logits3"].argmax(1).numpy()

    # digiKam's steps per image (batch of one), then one readNetFromTensorflow net in OpenCV 4.10
    for i, p in enumerate(photos):
        np.testing.assert_array_equal(digikam_blob(p)[0], blobs[i])
    (run,) = run_on_blobs(pb_file, blobs, ("4.10.0.84",)).values()
    cv_probs = np.array(run.probs)
    session = ort.InferenceSession(str(contract_file), providers=["CPUExecutionProvider"])
    ort_probs = np.array([session.run(None, {"input": b[None]})[0][0] for b in blobs])

    assert set(ref_cls.tolist()) == {0, 1, 2}, "classes must be spread for the proof to mean anything"
    np.testing.assert_array_equal(cv_probs.argmax(1), ref_cls)
    np.testing.assert_array_equal(ort_probs.argmax(1), ref_cls)
    np.testing.assert_allclose(cv_probs, ref_probs, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ort_probs, ref_probs, atol=1e-4, rtol=0)
    if head != "classification":
        # score heads: the class is the thresholded score, s <= t1 bad, t1 < s <= t2 normal, else good
        t1, t2 = model.meta["thresholds"]
        s = ref["score"].numpy()
        np.testing.assert_array_equal(ref_cls, np.where(s <= t1, 0, np.where(s <= t2, 1, 2)))

    # full profile: dynamic batch, score + probs
    full = ort.InferenceSession(str(full_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in full.get_outputs()]
    assert names == ["score", "probs"]
    score, probs = full.run(None, {"input": blobs[:7]})
    np.testing.assert_allclose(score, ref["score"].numpy()[:7], atol=1e-4)
    np.testing.assert_allclose(probs, ref_probs[:7], atol=1e-4)
    card = (out_dir / "MODEL_CARD.md").read_text()
    assert "bad, normal, good" in card and f"{model.meta['thresholds'][0]}" in card


@pytest.mark.slow
def test_distribution_head_full_profile(tmp_path: Path, photos: list[np.ndarray]) -> None:
    blobs = np.concatenate([digikam_blob(p) for p in photos[:6]])
    model = make_model("distribution", blobs)
    files = export.export_model(model, model.meta, tmp_path, "m", ["full"], 17, "test")
    session = ort.InferenceSession(str(files["full"]), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["score", "probs", "dist"]
    score, probs, dist = session.run(None, {"input": blobs})
    with torch.no_grad():
        ref = model(DigikamToBackbone.from_meta(model.meta)(torch.from_numpy(blobs)))
    np.testing.assert_allclose(dist, ref["dist"].numpy(), atol=1e-5)
    np.testing.assert_allclose(dist.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(score, ref["score"].numpy(), atol=1e-4)


def test_checkpoint_without_meta_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="iqs_meta"):
        read_checkpoint(path)
    assert export.main([f"checkpoint={path}", f"out_dir={tmp_path}"]) == 2
    assert export.main([f"checkpoint={tmp_path / 'missing.ckpt'}"]) == 2


def test_adapter_matches_manual_normalisation() -> None:
    meta = {"input_size": [224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    got = DigikamToBackbone.from_meta(meta)(x)
    manual = torch.nn.functional.interpolate(
        (x + 1) / 2, size=(224, 224), mode="bilinear", align_corners=False
    )
    manual = (manual - torch.tensor(meta["mean"]).view(1, 3, 1, 1)) / torch.tensor(meta["std"]).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(got, manual, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_export_from_mlflow_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_db: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    model = tiny_quality_model("classification")
    uri = f"sqlite:///{shutil.copy(migrated_db, tmp_path)}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("export-test", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_params({"data.name": "demo", "thresholds.t1": 5.0, "thresholds.t2": 6.0})
        mlflow.log_metrics({"test/koniq/srcc": 0.71, "test/all/srcc": 0.65, "test/ava/macro_f1": 0.4})
        mlflow.log_artifact(str(save_checkpoint(model, tmp_path / "best-epoch3.ckpt")), "checkpoints")
    out_dir = tmp_path / "out"
    assert export.main([f"run_id={run.info.run_id}", f"out_dir={out_dir}"]) == 0
    card = (out_dir / "MODEL_CARD.md").read_text()
    assert "| koniq |" in card and "| 0.71 |" in card and "data.name" in card
    logged = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "export")}
    assert logged == {f"export/{p.name}" for p in out_dir.iterdir()}
    assert len(logged) == 3
