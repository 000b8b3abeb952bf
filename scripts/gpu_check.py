"""The GPU check's measurements (run by scripts/gpu_check.sh, which sets up the environment first).

1. builds the demo and prepares it as JPEG shards (`iqs data prepare prepare.format=jpeg`);
2. fine-tunes lite0 end to end with `iqs train experiment=demo trainer=gpu_bf16 backbone.freeze=false` on those
   shards, with Lightning's SimpleProfiler: the in-run step time (`run_training_batch`) and the time the loop
   waited for the loader (`train_dataloader_next`);
3. measures apart, on the same machine: the prepared loader (the DataModule's ImageRows over the JPEG shards,
   train augmentation, N workers), a synchronised lite0 train step (299 px) under bf16 autocast, the trained
   model's scoring rate on the device, and nvJPEG's decode rate for the shard bytes (CUDA only);
4. runs `iqs predict` on the demo images with the trained checkpoint (onnxruntime: on the CPU cores, since the
   onnxruntime package has no CUDA provider) and reads its files/s.

Writes gpu_check.json to --out. `--cpu --quick` runs every step on the CPU in tiny sizes: it proves the script,
its numbers say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def _iqs(args: list[str], log: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run `iqs <args>` (this interpreter's iqs), tee its output to `log`; (seconds, output). Raises on failure."""
    cmd = [sys.executable, "-m", "iqs.cli", *args]
    print("$ iqs " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    log.write_text(out)
    if proc.returncode != 0:
        print(out[-4000:], file=sys.stderr)
        raise SystemExit(f"`iqs {' '.join(args[:2])}` failed (exit {proc.returncode}); full output in {log}")
    return seconds, out


def _profile_means(path: Path) -> dict[str, tuple[float, int]]:
    """{action: (mean seconds, calls)} from a SimpleProfiler report (its text table is its only output)."""
    means = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3:
            try:
                means[cells[0]] = (float(cells[1]), int(float(cells[2])))
            except ValueError:
                continue
    return means


def _env_report(device: str) -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cores": os.cpu_count(),
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def _loader_ips(rows, batch: int, workers: int, max_batches: int) -> float:
    from torch.utils.data import DataLoader

    loader = DataLoader(
        rows, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    it = iter(loader)
    next(it)  # worker start-up is paid once per run, not per image
    n, t0 = 0, time.perf_counter()
    for i, b in enumerate(it):
        n += len(b["image"])
        if i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t0)


def _rows(cache: Path, spec, train: bool):
    """The DataModule's ImageRows over every demo image, served from the JPEG shards."""
    import numpy as np

    from iqs.core.preprocess import eval_transform, train_transform
    from iqs.data.prepare import PreparedImages
    from iqs.data.table import make_table
    from iqs.train.datamodule import ImageRows

    prepared = {}
    keys = []
    for folder in sorted((cache / "prepared").iterdir()):
        pre = PreparedImages(folder)
        if pre.formats() == {"jpeg"}:
            source = folder.name.rsplit("-", 1)[0]
            prepared[source] = pre
            keys += [(source, p) for p in pre.paths()]
    n = len(keys)
    if not n:
        raise SystemExit(f"no JPEG shards under {cache / 'prepared'}: did `iqs data prepare` run?")
    paths = [k[1] for k in keys]
    table = make_table("demo", paths, paths, np.full(n, 5.0), np.full(n, 5.0), np.full((n, 10), 0.1))
    table["dataset"] = [k[0] for k in keys]
    table["label"] = 1
    tf = train_transform(spec) if train else eval_transform(spec)
    # every key is served from a shard, so the file-path fallback is never taken
    return ImageRows(table, np.arange(n), np.zeros(n, int), np.ones(n), np.array(paths), tf, prepared)


def _model_ips(ckpt: Path, rows, device: str, batch: int, n_batches: int) -> float:
    """The trained model scoring ready inputs on `device` (bf16 autocast on CUDA), synchronised."""
    import torch

    from iqs.models.checkpoints import load_checkpoint

    model, _ = load_checkpoint(ckpt)
    model = model.to(device)
    x = torch.stack([rows[i]["image"] for i in range(min(batch, len(rows)))]).to(device)
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        model(x)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n_batches):
            model(x)
        if device == "cuda":
            torch.cuda.synchronize()
    return n_batches * len(x) / (time.perf_counter() - t0)


def _nvjpeg_ips(cache: Path, batch: int = 256, rounds: int = 5) -> tuple[float, float]:
    """(nvJPEG batch decode img/s on the GPU, libjpeg-turbo img/s on one core) for the JPEG shard bytes."""
    import torch

    from iqs.data.prepare import PreparedImages
    from iqs.data.shard_format import decode, decode_jpeg_batch_cuda

    hits = []
    for folder in sorted((cache / "prepared").iterdir()):
        pre = PreparedImages(folder)
        hits += [pre.encoded(p) for p in pre.paths()]
    hits = [h for h in hits if h[1].get("format") == "jpeg"][:batch]
    buffers = [data.tobytes() for data, _ in hits]
    decode_jpeg_batch_cuda(buffers)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(rounds):
        decode_jpeg_batch_cuda(buffers)
    torch.cuda.synchronize()
    gpu = rounds * len(buffers) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for data, entry in hits:
        decode(entry, data)
    return gpu, len(hits) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (proves the script; no GPU numbers)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a few batches of 8 at 64 px per step")
    ap.add_argument("--out", required=True, help="folder for gpu_check.json and the logs")
    ap.add_argument("--work", required=True, help="IQS_ROOT for the run: data, cache, mlruns, outputs")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default: cores, at most 16)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()

    import torch

    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch: run with --cpu to check the script on a CPU")
    out, work = Path(args.out), Path(args.work).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 1)
    batch = 8 if args.quick else args.batch
    # --quick trains at 64 px (digiKam's 299 px view, then resized to 64 by DigikamToBackbone): bf16 autocast
    # on a CPU without bf16 units took ~11 s per batch of 8 at 299 px
    size = 64 if args.quick else 299
    env = {
        **os.environ,
        "IQS_ROOT": str(work),
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "160",  # rich's tables and summaries unwrapped in the logs
    }
    env.pop("IQS_DATA_DIR", None), env.pop("IQS_CACHE_DIR", None), env.pop("MLFLOW_TRACKING_URI", None)
    results: dict = {
        "env": _env_report(device),
        "quick": args.quick,
        "workers": workers,
        "batch": batch,
        "input_size": size,
    }
    print(json.dumps(results["env"]), flush=True)

    results["build_demo_s"], _ = _iqs(["data", "build-demo"], out / "build_demo.log", env)
    results["prepare_s"], _ = _iqs(
        ["data", "prepare", "prepare.format=jpeg", f"prepare.workers={workers}"], out / "prepare.log", env
    )

    prof_dir = work / "profile"
    train = [
        "train",
        "experiment=demo",
        "trainer=gpu_bf16",
        "backbone.freeze=false",
        "cache.enabled=false",
        "prepare.format=jpeg",
        f"loader.num_workers={workers}",
        f"loader.batch_size={batch}",
        f"loader.eval_batch_size={batch}",
        f"trainer.max_epochs={1 if args.quick else args.epochs}",
        f"backbone.input_size={size}",
        "trainer.enable_progress_bar=false",
        "callbacks.early_stopping.enabled=false",
        "++trainer.profiler._target_=pytorch_lightning.profilers.SimpleProfiler",
        f"++trainer.profiler.dirpath={prof_dir}",
        "++trainer.profiler.filename=profile",
        "++tags.check=gpu_check",
    ]
    if args.cpu:
        train.append("trainer.accelerator=cpu")  # same config, bf16 autocast on the CPU
    if args.quick:
        train += [
            "++trainer.limit_train_batches=3",
            "++trainer.limit_val_batches=1",
            "++trainer.limit_test_batches=1",
        ]
    results["train_s"], train_out = _iqs(train, out / "train.log", env)
    results["train_overrides"] = train[1:]

    report = prof_dir / "fit-profile.txt"
    means = _profile_means(report)
    step_s, steps = means.get("run_training_batch", (float("nan"), 0))
    wait_s, _ = means.get("[_TrainingEpochLoop].train_dataloader_next", (float("nan"), 0))
    results["in_run"] = {
        "train_batches": steps,
        "step_mean_s": step_s,
        "loader_wait_mean_s": wait_s,
        "train_step_ips": batch / step_s,
        "loader_wait_share": wait_s / (wait_s + step_s),
        "note": "host-side times from Lightning's SimpleProfiler; the last batch of an epoch may be smaller",
    }

    from iqs.core.preprocess import InputSpec
    from iqs.models.checkpoints import read_meta

    ckpts = sorted(work.rglob("checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise SystemExit(f"the training run left no checkpoint under {work}")
    ckpt = ckpts[-1]
    spec = InputSpec.from_meta(read_meta(ckpt))  # the trained model's own input view
    rows = _rows(work / "cache", spec, train=True)
    n_batches = 3 if args.quick else 30
    loader = _loader_ips(rows, batch, workers, n_batches)

    from loader_bench import finetune_step_ips

    step = finetune_step_ips(size, batch=batch, n_steps=2 if args.quick else 20, device=device, bf16=True)
    results["isolated"] = {
        "prepared_loader_ips": loader,
        "train_step_ips": step,
        "loader_vs_step_ratio": loader / step,
        "note": f"lite0 + linear head, fwd+bwd+AdamW at {size} px, bf16 autocast, synchronised; the loader is "
        f"ImageRows over the JPEG shards with train augmentation on {workers} workers",
    }

    eval_rows = _rows(work / "cache", spec, train=False)
    results["model_scoring_ips"] = _model_ips(
        ckpt, eval_rows, device, 256 if device == "cuda" else batch, 2 if args.quick else 20
    )
    if device == "cuda":
        gpu, cpu = _nvjpeg_ips(work / "cache")
        results["jpeg_decode"] = {"nvjpeg_gpu_ips": gpu, "libjpeg_turbo_one_core_ips": cpu}

    photos = work / "data" / "demo"  # every demo photo, all three sources
    if args.quick:  # a small sample: the point is that predict runs, not its rate
        photos = work / "predict_sample"
        photos.mkdir(exist_ok=True)
        for src in sorted((work / "data" / "demo").rglob("*.jpg"))[:16]:
            (photos / src.name).write_bytes(src.read_bytes())
    predict_args = ["predict", str(photos), "-o", str(out / "predict.csv"), f"model={ckpt}"]
    results["predict_s"], pout = _iqs(predict_args, out / "predict.log", env)
    rate = re.search(r"then ([0-9.]+)\s+files/s", pout)  # rich may wrap the line before "files/s"
    results["predict"] = {
        "files_per_s": float(rate.group(1)) if rate else None,
        "engine": "onnxruntime CPUExecutionProvider (iqs predict has no GPU path)",
        "folder": str(photos.relative_to(work)),
    }
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "train_overrides"}, indent=2))
    print(f"written to {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
