"""`iqs predict` throughput on camera-sized JPEGs against the machine's limit, a naive loop and the bare model.

- predict: the `iqs predict` pipeline in-process, with the CLI's defaults (`predict_paths`, `OnnxScorer`),
  on 12 MP and 24 MP JPEGs.
- limit: what the cores can do at best. A photo costs `t_decode` (read, DCT-reduced decode, digiKam
  preparation, single-threaded) plus `t_model` (onnxruntime on one thread, the cheaper of batch 1 and
  batch 16), so `limit = os.cpu_count() / (t_decode + t_model)`. Each round measures both times just before
  and just after its predict pass (averaged); the goal is `predict_vs_limit_ratio`, the median round's
  ratio, >= 0.9.
- CPU check: the process CPU time `iqs predict` spends per photo against the single-threaded CPU time of
  the same work. Unlike the wall-clock ratio it barely moves when other programs share the machine, so it
  tells wasted work (spinning, per-photo overhead) apart from cores lost to other programs; and the share
  of all cores' time the process got during predict (`predict_core_utilisation`, 1.0 = every core busy).
- beside load: the same predict pass while a CPU-heavy process (torch matmuls on every core, like a
  training run) runs next to it; for information, against the quiet limit of the same run.
- naive: Pillow full decode, Pillow resize to 299, eager PyTorch forward, one image at a time.
- model (information only): onnxruntime alone on ready blobs with all cores at batch 16. No decoder feeds
  that rate, so `predict_vs_model_ratio` is kept for comparison with older results, not as a goal.

Run: `python bench/run.py --only predict_bench`.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from skimage import data

from iqs.core.preprocess import DIGIKAM_SIZE, DigikamToBackbone
from iqs.deploy.export import exporter as export
from iqs.deploy.predict.scorer import OnnxScorer, predict_paths, prepare

SIZES = {"12MP": (4000, 3000), "24MP": (6000, 4000)}
PER_SIZE = 3
BATCH = 16  # the batch of the bare-model rate and the larger of the two single-threaded model timings
ROUNDS = 5  # decode, model, predict, decode, model per round; the ratio is the median round's
STREAM_REPEAT = 16  # a predict pass scores the 6 photos 16 times (96 photos): start and tail effects < 2 %
LOAD_SCRIPT = """
import torch
torch.set_num_threads({threads})
a = torch.randn(768, 768)
a = torch.tanh(a @ a)
print("ready", flush=True)
while True:
    a = torch.tanh(a @ a)
"""


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


def _per_item(fn: Callable[[], int]) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds) per item of `fn()`, which returns how many items it did."""
    wall, cpu = time.perf_counter(), time.thread_time()
    n = fn()
    return (time.perf_counter() - wall) / n, (time.thread_time() - cpu) / n


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def _measure_round(photos: list[Path], stream: list[Path], scorer: OnnxScorer) -> dict:
    def decode_all() -> int:
        for path in photos:
            prepare(path, DIGIKAM_SIZE, None)
        return len(photos)

    blobs = np.stack([prepare(p, DIGIKAM_SIZE, None) for p in photos] * (BATCH // len(photos) + 1))[:BATCH]

    def model_batch_1() -> int:
        for blob in blobs:
            scorer(blob[None])
        return len(blobs)

    def model_batch_n() -> int:
        scorer(blobs)
        return len(blobs)

    def single_threaded() -> list[tuple[float, float]]:
        return [_per_item(decode_all), _per_item(model_batch_1), _per_item(model_batch_n)]

    before = single_threaded()
    cpu0, start = _process_cpu(), time.perf_counter()
    rows = list(predict_paths(stream, scorer))
    seconds, cpu = time.perf_counter() - start, _process_cpu() - cpu0
    after = single_threaded()  # before and after, averaged: the limit spans the same minute as predict
    assert all(r.error == "" for r in rows), [r.error for r in rows if r.error]
    (t_decode, cpu_decode), (t_model_1, cpu_model_1), (t_model_n, cpu_model_n) = (
        ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in zip(before, after, strict=True)
    )
    t_model, cpu_model = min((t_model_1, cpu_model_1), (t_model_n, cpu_model_n))
    limit = (os.cpu_count() or 1) / (t_decode + t_model)
    predict_ips = len(stream) / seconds
    return {
        "decode_ms": 1e3 * t_decode,
        "model_ms": 1e3 * t_model,
        "model_batch_1_ms": 1e3 * t_model_1,
        f"model_batch_{BATCH}_ms": 1e3 * t_model_n,
        "limit_ips": limit,
        "predict_ips": predict_ips,
        "ratio": predict_ips / limit,
        "cpu_work_ms": 1e3 * (cpu_decode + cpu_model),
        "predict_cpu_ms": 1e3 * cpu / len(stream),
        "utilisation": cpu / (seconds * (os.cpu_count() or 1)),
    }


def _beside_load(stream: list[Path], scorer: OnnxScorer) -> float:
    """predict img/s while torch matmuls on every core run in another process (like a training run)."""
    threads = os.cpu_count() or 1
    load = subprocess.Popen(
        [sys.executable, "-c", LOAD_SCRIPT.format(threads=threads)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert load.stdout is not None and load.stdout.readline().strip() == "ready", "load process failed"
        time.sleep(0.5)  # let it reach full speed
        start = time.perf_counter()
        list(predict_paths(stream, scorer))
        return len(stream) / (time.perf_counter() - start)
    finally:
        load.kill()
        load.wait()


def _bare_model_ips(onnx_path: Path, n: int) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])  # all cores, defaults
    blobs = np.random.default_rng(0).uniform(-1, 1, (n, 3, DIGIKAM_SIZE, DIGIKAM_SIZE)).astype(np.float32)
    session.run(["score", "probs"], {"input": blobs[:BATCH]})
    start = time.perf_counter()
    for i in range(0, n, BATCH):
        session.run(["score", "probs"], {"input": blobs[i : i + BATCH]})
    return n / (time.perf_counter() - start)


def run(work_dir: str | Path) -> dict:
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    photos = make_photos(work_dir)
    model = _model()
    onnx_path = export.export_model(
        model, model.meta, work_dir, "bench", ["full"], 17, "bench", verify=False
    )["full"]
    scorer = OnnxScorer(onnx_path)  # the CLI's default session
    stream = photos * STREAM_REPEAT
    list(predict_paths(photos, scorer))  # warm-up: page cache, ORT arenas

    rounds = [_measure_round(photos, stream, scorer) for _ in range(ROUNDS)]
    mid = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    loaded_ips = _beside_load(stream, scorer)
    model_ips = _bare_model_ips(onnx_path, 3 * BATCH)
    naive_ips = _naive_ips(photos, model)
    cpu_work = statistics.median(r["cpu_work_ms"] for r in rounds)
    predict_cpu = statistics.median(r["predict_cpu_ms"] for r in rounds)
    return {
        "images": {k: f"{PER_SIZE} x {w}x{h} JPEG" for k, (w, h) in SIZES.items()},
        "cpu_count": os.cpu_count(),
        "predict_rounds": ROUNDS,
        "predict_images_per_round": len(stream),
        "decode_ms_per_image": round(mid["decode_ms"], 1),
        "model_ms_per_image": round(mid["model_ms"], 1),
        "model_batch_1_ms_per_image": round(mid["model_batch_1_ms"], 1),
        f"model_batch_{BATCH}_ms_per_image": round(mid[f"model_batch_{BATCH}_ms"], 1),
        "limit_ips": round(mid["limit_ips"], 2),
        "predict_ips": round(mid["predict_ips"], 2),
        "predict_vs_limit_ratio": round(mid["ratio"], 3),
        "predict_vs_limit_ratio_rounds": [round(r["ratio"], 3) for r in rounds],
        "predict_cpu_ms_per_image": round(predict_cpu, 1),
        "work_cpu_ms_per_image": round(cpu_work, 1),
        "predict_cpu_vs_work_ratio": round(predict_cpu / cpu_work, 3),
        "predict_core_utilisation": round(statistics.median(r["utilisation"] for r in rounds), 3),
        "predict_beside_load_ips": round(loaded_ips, 2),
        "predict_vs_limit_ratio_beside_load": round(loaded_ips / mid["limit_ips"], 3),
        "naive_ips": round(naive_ips, 2),
        "predict_vs_naive_ratio": round(mid["predict_ips"] / naive_ips, 2),
        "model_ips": round(model_ips, 2),
        "predict_vs_model_ratio": round(mid["predict_ips"] / model_ips, 2),
        "predict_vs_model_ratio_note": "information only: the bare model on ready blobs with every core, "
        "a rate no decoder can feed; the goal is predict_vs_limit_ratio",
    }


if __name__ == "__main__":
    sys.exit(
        subprocess.call([sys.executable, str(Path(__file__).parent / "run.py"), "--only", "predict_bench"])
    )
