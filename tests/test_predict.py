from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from tests.conftest import tiny_quality_model

from iqs.core.preprocess import DigikamToBackbone, digikam_chw
from iqs.core.xmp import read_xmp, sidecar_path
from iqs.deploy.export import exporter as export
from iqs.deploy.predict import command as predict_cli
from iqs.deploy.predict import scorer as predict


@pytest.fixture(scope="module")
def model_and_onnx(tmp_path_factory: pytest.TempPathFactory):
    """A tiny timm backbone (fast) with a regression head, exported in the full profile."""
    model = tiny_quality_model()
    out = tmp_path_factory.mktemp("model")
    path = export.export_model(model, model.meta, out, "tiny", ["full"], 17, "test")["full"]
    ckpt = out / "tiny.ckpt"
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "iqs_meta": model.meta}, ckpt
    )
    return model, path, ckpt


def _photo(seed: int, size: tuple[int, int] = (420, 320)) -> np.ndarray:
    src = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()][seed % 4]
    rng = np.random.default_rng(seed)
    noisy = cv2.resize(src, size).astype(float) + rng.normal(0, 10 * (seed % 3), (size[1], size[0], 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "2024" / "trip").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(_photo(i)).save(root / "2024" / f"img{i}.jpg", quality=90)
    Image.fromarray(_photo(7)).save(root / "2024" / "trip" / "pano.png")
    Image.fromarray(_photo(8, (300, 500))).save(root / "2024" / "trip" / "tall.webp")
    (root / "2024" / "notes.txt").write_text("not a photo, not picked up by folder scans")
    return root


def _run(args: list[str], model: Path) -> int:
    return predict_cli.main([*args, f"model={model}", "--workers", "2"])


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.suffix != ".xmp" and p.is_file()
    }


@pytest.mark.slow
def test_folder_to_csv_matches_torch(model_and_onnx, folder: Path, tmp_path: Path) -> None:
    model, onnx_path, _ = model_and_onnx
    out = tmp_path / "scores.csv"
    assert _run([str(folder), "--output", str(out)], onnx_path) == 0
    rows = _read_csv(out)
    assert [Path(r["path"]).name for r in rows] == [
        "img0.jpg",
        "img1.jpg",
        "img2.jpg",
        "img3.jpg",
        "img4.jpg",
        "pano.png",
        "tall.webp",
    ]
    assert list(rows[0]) == predict.COLUMNS
    # the same numbers as the PyTorch model on the same decoded pixels
    from iqs.core.decode import load_rgb

    blobs = np.stack([digikam_chw(load_rgb(r["path"])) for r in rows])
    with torch.no_grad():
        ref = model(DigikamToBackbone.from_meta(model.meta)(torch.from_numpy(blobs)))
    np.testing.assert_allclose([float(r["score"]) for r in rows], ref["score"].numpy(), atol=1e-4)
    probs = np.array([[float(r[k]) for k in ("prob_bad", "prob_normal", "prob_good")] for r in rows])
    np.testing.assert_allclose(probs, ref["probs"].numpy(), atol=1e-4)
    names = ["bad", "normal", "good"]
    assert [r["class"] for r in rows] == [names[c] for c in ref["logits3"].argmax(1).tolist()]
    assert all(r["error"] == "" and int(r["pick_label"]) == names.index(r["class"]) + 1 for r in rows)


@pytest.mark.slow
def test_bad_inputs_are_rows_and_photos_in_odd_formats_are_scored(model_and_onnx, tmp_path: Path) -> None:
    _, onnx_path, _ = model_and_onnx
    root = tmp_path / "mixed"
    root.mkdir()
    photo = _photo(1)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    (root / "ok.jpg").write_bytes(jpeg)
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("hello, I am not a JPEG")
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(500))
    Image.fromarray(photo).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(photo[:, :, 0].astype(np.uint16) * 257).save(root / "gray16.png")
    Image.fromarray(photo[:, :, 1]).save(root / "gray.png")
    Image.fromarray(np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])).save(root / "alpha.png")
    Image.fromarray(cv2.resize(photo, (1200, 1000))).save(root / "huge.png")
    out = tmp_path / "rows.json"
    rc = _run([str(root), "--output", str(out), "max_pixels=1000000"], onnx_path)
    assert rc == 0  # some files scored, no --strict
    rows = {Path(r["path"]).name: r for r in json.loads(out.read_text())}
    failed = {name for name, r in rows.items() if r["error"]}
    assert failed == {"zero.jpg", "text.jpg", "truncated.jpg", "corrupt.png", "huge.png"}
    for name in failed:
        assert name in rows[name]["error"] and rows[name]["score"] is None and rows[name]["class"] is None
    assert "empty" in rows["zero.jpg"]["error"] and "exceeds the limit" in rows["huge.png"]["error"]
    for name in ("ok.jpg", "cmyk.jpg", "gray16.png", "gray.png", "alpha.png"):
        assert rows[name]["class"] in ("bad", "normal", "good")
        assert abs(rows[name]["prob_bad"] + rows[name]["prob_normal"] + rows[name]["prob_good"] - 1) < 1e-5

    assert _run([str(root), "--output", str(out), "--strict", "max_pixels=1000000"], onnx_path) == 1
    bad_only = tmp_path / "bad_only"
    bad_only.mkdir()
    (bad_only / "zero.jpg").write_bytes(b"")
    (bad_only / "text.png").write_text("nope")
    assert _run([str(bad_only), "--output", str(tmp_path / "b.csv")], onnx_path) == 1
    assert [r["error"] != "" for r in _read_csv(tmp_path / "b.csv")] == [True, True]


@pytest.mark.slow
def test_write_xmp_dry_run_then_for_real(model_and_onnx, folder: Path, tmp_path: Path, capsys) -> None:
    _, onnx_path, _ = model_and_onnx
    before = _hashes(folder)
    existing = sidecar_path(folder / "2024" / "img0.jpg")
    existing.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="5"/></rdf:RDF></x:xmpmeta>'
    )
    existing_bytes = existing.read_bytes()
    assert _run([str(folder), "--dry-run", "--output", str(tmp_path / "d.csv")], onnx_path) == 0
    assert "[dry-run]" in capsys.readouterr().err
    assert sorted(p.name for p in folder.rglob("*.xmp")) == ["img0.jpg.xmp"]
    assert existing.read_bytes() == existing_bytes

    assert _run([str(folder), "--write-xmp", "--output", str(tmp_path / "w.csv")], onnx_path) == 0
    rows = _read_csv(tmp_path / "w.csv")
    for r in rows:
        xmp = read_xmp(sidecar_path(r["path"]))
        assert xmp["Xmp.digiKam.PickLabel"] == r["pick_label"]
    assert read_xmp(existing)["Xmp.xmp.Rating"] == "5"
    assert _hashes(folder) == before  # photos are never modified

    assert (
        _run(
            [str(folder), "--write-xmp", "--sidecar-style=basename", "-o", str(tmp_path / "b.csv")], onnx_path
        )
        == 0
    )
    assert (folder / "2024" / "img1.xmp").exists() and (folder / "2024" / "trip" / "pano.xmp").exists()


@pytest.mark.slow
def test_checkpoint_as_model_and_json_stdout(model_and_onnx, folder: Path, capsys) -> None:
    _, _, ckpt = model_and_onnx
    assert predict_cli.main([str(folder / "2024" / "img1.jpg"), "--format", "json", f"model={ckpt}"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["class"] in ("bad", "normal", "good")


def test_streaming_keeps_order_and_bounds_in_flight(model_and_onnx, folder: Path) -> None:
    _, onnx_path, _ = model_and_onnx
    scorer = predict.OnnxScorer(onnx_path)
    calls, threads = [], set()
    real = scorer.__call__

    class Spy:
        meta, class_names = scorer.meta, scorer.class_names

        def __call__(self, batch):
            import threading

            calls.append(len(batch))
            threads.add(threading.current_thread().name)
            return real(batch)

    paths = [folder / "2024" / f"img{i % 5}.jpg" for i in range(40)]
    paths[7] = folder / "2024" / "missing.jpg"  # an error row keeps its place
    consumed = []

    def stream():
        for p in paths:
            consumed.append(p)
            yield p

    rows = predict.predict_paths(stream(), Spy(), workers=3)
    first = next(rows)
    assert len(consumed) <= 8 * 3 + 1 < len(paths)  # eight photos per worker in flight, never all
    rest = list(rows)
    assert [r.path for r in [first, *rest]] == [str(p) for p in paths]
    assert rest[6].error_kind == "missing" and rest[6].label is None
    # every photo is scored alone, by the worker that decoded it, never in the consumer's thread
    assert calls == [1] * 39 and threads and all(t.startswith("iqs-predict") for t in threads)
    ref = {str(p): r for p, r in zip(paths, [first, *rest], strict=True)}
    again = list(predict.predict_paths(paths[:5], scorer, workers=1))  # one worker: the same numbers
    assert [r.score for r in again] == [ref[str(p)].score for p in paths[:5]]


def test_abandoned_stream_stops_scoring(model_and_onnx, folder: Path) -> None:
    _, onnx_path, _ = model_and_onnx
    scorer = predict.OnnxScorer(onnx_path)
    count = []
    real = scorer.__call__

    class Counting:
        meta, class_names = scorer.meta, scorer.class_names

        def __call__(self, batch):
            count.append(1)
            return real(batch)

    rows = predict.predict_paths([folder / "2024" / "img0.jpg"] * 200, Counting(), workers=2)
    next(rows)
    rows.close()  # e.g. Ctrl-C in the consumer: queued photos are cancelled, not scored
    assert len(count) <= 8 * 2 + 2


def test_rejects_contract_profile_and_missing_model(model_and_onnx, tmp_path: Path) -> None:
    model, _, _ = model_and_onnx
    dk = export.export_model(model, model.meta, tmp_path, "dk", ["contract_onnx"], 17, "test", verify=False)[
        "contract_onnx"
    ]
    with pytest.raises(ValueError, match="full profile"):
        predict.OnnxScorer(dk)
    assert predict_cli.main([str(tmp_path)]) == 2  # no model given


def test_a_missing_model_file_is_one_line_not_a_traceback(tmp_path: Path, capsys) -> None:
    for missing in ("gone.onnx", "gone.ckpt"):
        assert predict_cli.main([str(tmp_path), f"model={tmp_path / missing}"]) == 2
        err = capsys.readouterr().err
        assert f"model file not found: {tmp_path / missing}" in err and "Traceback" not in err


def test_tiff_round_trip_through_predict(model_and_onnx, tmp_path: Path) -> None:
    """8/16-bit, RGB/grey TIFFs scored by `iqs predict` = the model on the pixels that were stored."""
    import tifffile

    model, onnx_path, _ = model_and_onnx
    root = tmp_path / "tiffs"
    root.mkdir()
    rgb = _photo(2, (360, 240))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    expected = {}
    for bits in (8, 16):
        for name, pixels, photometric in (("rgb", rgb, "rgb"), ("grey", grey, "minisblack")):
            stored = pixels.astype(np.uint16) * 257 if bits == 16 else pixels
            path = root / f"{name}{bits}.tiff" if bits == 16 else root / f"{name}{bits}.tif"
            tifffile.imwrite(path, stored, photometric=photometric, compression="zlib")
            expected[path.name] = pixels if pixels.ndim == 3 else np.repeat(pixels[:, :, None], 3, axis=2)
    out = tmp_path / "t.csv"
    assert _run([str(root), "--output", str(out), "--strict"], onnx_path) == 0
    rows = {Path(r["path"]).name: r for r in _read_csv(out)}
    assert sorted(rows) == sorted(expected)
    blobs = np.stack([digikam_chw(expected[name]) for name in sorted(expected)])
    with torch.no_grad():
        ref = model(DigikamToBackbone.from_meta(model.meta)(torch.from_numpy(blobs)))
    got = [float(rows[name]["score"]) for name in sorted(expected)]
    np.testing.assert_allclose(got, ref["score"].numpy(), atol=1e-4)
    assert rows["grey8.tif"]["score"] == rows["grey16.tiff"]["score"]  # same picture, 8 or 16 bits
