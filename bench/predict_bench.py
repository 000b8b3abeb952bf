"""`iqs predict` throughput on camera-sized JPEGs against a naive loop and the bare model.

- predict: the `iqs predict` pipeline in-process (`predict_paths`: DCT-reduced decode in a thread pool,
  digiKam preparation, batched onnxruntime), on 12 MP and 24 MP JPEGs.
- naive: Pillow full decode, Pillow resize to 299, eager PyTorch forward, one image at a time.
- model: onnxruntime alone on ready (N, 3, 299, 299) blobs, same session and batch size as predict.

Goals: predict >= 4x naive, and >= 0.8x the bare model. Run: `python bench/predict_bench.py`
(writes/merges `predict` into bench/results.json).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from skimage import data

from iqs.deploy import export
from iqs.deploy.predict import OnnxScorer, predict_paths
from iqs.deploy.preprocess import DIGIKAM_SIZE, DigikamToBackbone

SIZES = {"12MP": (4000, 3000), "24MP": (6000, 4000)}
PER_SIZE = 3
BATCH = 16


def make_photos(work_dir: Path) -> list[Path]:
    """Upscaled skimage photos plus sensor-like noise, so the JPEGs are not trivially compressible."""
    rng = np.random.default_rng(0)
    sources = [data.astronaut(), data.chelsea(), data.coffee()]
    paths = []
    for label, (w, h) in SIZES.items():
        for i in range(PER_SIZE):
            path = work_dir / f"{label}_{i}.jpg"
            if not path.exists():
                img = cv2.resize(sources[i % len(sources)], (w, h), interpolation=cv2.INTER_LINEAR)
                noise = rng.normal(0, 6, (h, w, 1)).astype(np.float32)
                img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(path, quality=92)
            paths.append(path)
    return paths


def _model():
    from iqs.models import build_quality_model

    torch.manual_seed(0)
    cfg = {
        "backbone": {"name": "tf_efficientnet_lite0", "weights": "packaged"},
        "head": {"name": "regression"},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    return build_quality_model(cfg).eval()


def _naive_ips(paths: list[Path], model: torch.nn.Module) -> float:
    adapt = DigikamToBackbone.from_meta(model.meta)
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            img = (
                ImageOps.exif_transpose(Image.open(path)).convert("RGB").resize((DIGIKAM_SIZE, DIGIKAM_SIZE))
            )
            x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
            model(adapt(x))
    return len(paths) / (time.perf_counter() - start)


def run(work_dir: str | Path) -> dict:
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    photos = make_photos(work_dir)
    model = _model()
    onnx_path = export.export_model(
        model, model.meta, work_dir, "bench", ["full"], 17, "bench", verify=False
    )["full"]
    scorer = OnnxScorer(onnx_path)

    stream = photos * 4  # 24 images: enough batches for a steady rate
    list(predict_paths(photos[:2], scorer, batch_size=BATCH))  # warm-up: thread pool, ORT arenas
    start = time.perf_counter()
    rows = list(predict_paths(stream, scorer, batch_size=BATCH))
    predict_ips = len(stream) / (time.perf_counter() - start)
    assert all(r.error == "" for r in rows), [r.error for r in rows if r.error]

    blobs = (
        np.random.default_rng(0)
        .uniform(-1, 1, (len(stream), 3, DIGIKAM_SIZE, DIGIKAM_SIZE))
        .astype(np.float32)
    )
    scorer(blobs[:BATCH])
    start = time.perf_counter()
    for i in range(0, len(blobs), BATCH):
        scorer(blobs[i : i + BATCH])
    model_ips = len(blobs) / (time.perf_counter() - start)

    naive_ips = _naive_ips(photos, model)
    return {
        "images": {k: f"{PER_SIZE} x {w}x{h} JPEG" for k, (w, h) in SIZES.items()},
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "predict_ips": round(predict_ips, 2),
        "naive_ips": round(naive_ips, 2),
        "model_ips": round(model_ips, 2),
        "predict_vs_naive_ratio": round(predict_ips / naive_ips, 2),
        "predict_vs_model_ratio": round(predict_ips / model_ips, 2),
    }


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="iqs-bench-") as tmp:
        result = run(tmp)
    print(json.dumps(result, indent=2))
    out = Path(__file__).resolve().parent / "results.json"
    merged = json.loads(out.read_text()) if out.exists() else {}
    merged["predict"] = result
    out.write_text(json.dumps(merged, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
