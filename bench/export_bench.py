"""The digiKam deliverable: how long `iqs export` takes, and how fast the .pb runs where digiKam runs it.

- `export_first_seconds`: `iqs export run_id=<demo run>` (default profiles: the .pb and iqs predict's ONNX)
  with an empty tool-venv folder and no pip cache, as on a fresh machine after `make setup`: it builds the
  OpenCV venvs the .pb is verified in (a one-time setup), writes and verifies. Goal <= 180 s.
- `export_seconds`: the same export again, venvs built. Goal <= 30 s.
- `pb_vs_stock_arch_speed`: seconds per photo of an InceptionV3-299 frozen graph (the stock model's
  architecture: timm `inception_v3` with random weights, since digiKam's file cannot be fetched here,
  exported the same way) over ours, both in OpenCV 4.10 with `readNetFromTensorflow`, one net reused, digiKam's
  preprocessing per photo (opencv_worker). Goal >= 2. The file sizes are reported beside it.

The demo run is a short `iqs train experiment=demo` (3 epochs) into a store of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

EPOCHS = 3
PHOTOS = 24
RELEASE = "4.10.0.84"  # Debian 13 / Fedora's OpenCV


def _env(work: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "IQS_ROOT": str(work), **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _demo_run(work: Path) -> str:
    from mlflow.tracking import MlflowClient

    demo = Path(os.environ.get("IQS_DATA_DIR", "data")).resolve()
    cmd = [sys.executable, "-m", "iqs.cli", "train", "experiment=demo", f"paths.data_dir={demo}"]
    cmd += [f"trainer.max_epochs={EPOCHS}", "callbacks.early_stopping.enabled=false"]
    subprocess.run(cmd, check=True, env=_env(work), stdout=subprocess.DEVNULL)
    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1)
    return runs[0].info.run_id


def _export(work: Path, run_id: str, out: Path, venvs: Path, cold: bool) -> float:
    extra = {"IQS_VENV_DIR": str(venvs)}
    if cold:
        extra["PIP_NO_CACHE_DIR"] = "1"  # a fresh machine has no wheels cached
    cmd = [
        sys.executable,
        "-m",
        "iqs.cli",
        "export",
        f"run_id={run_id}",
        f"out_dir={out}",
        "log_to_run=false",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=_env(work, **extra), stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _stock_arch_pb(out: Path) -> Path:
    """InceptionV3 at 299 px with a 3-class head, random weights, through the same .pb writer."""
    import torch

    from iqs.deploy.export.tf_export import export_pb
    from iqs.models import build_quality_model

    torch.manual_seed(0)
    cfg = {
        "backbone": {"name": "inception_v3", "weights": "none", "input_size": 299},
        "head": {"name": "classification"},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    model = build_quality_model(cfg).eval()
    return export_pb(model, model.meta, out / "inception_v3.digikam.pb", verify=False)


def _seconds_per_photo(pb: Path, photos: list[Path]) -> float:
    from iqs.deploy.compat.opencv_matrix import ensure_venv, run_worker

    run = run_worker(ensure_venv(RELEASE), pb, photos, RELEASE)
    if not run.loads:
        raise RuntimeError(f"{pb} does not load in OpenCV {RELEASE}: {run.error}")
    times = sorted(t for t in run.ms[1:] if t is not None)  # the first forward allocates: left out
    return times[len(times) // 2] / 1e3  # the median: robust to the machine's noise


def run(work: str) -> dict:
    from iqs.deploy.compat.command import compat_photos, write_photos

    work_dir = Path(work)
    run_id = _demo_run(work_dir)
    first = _export(work_dir, run_id, work_dir / "first", work_dir / "venvs", cold=True)
    again = _export(work_dir, run_id, work_dir / "again", work_dir / "venvs", cold=False)
    ours = next((work_dir / "again").glob("*.digikam.pb"))
    stock = _stock_arch_pb(work_dir / "stock")
    photos = write_photos(compat_photos(PHOTOS, seed=3), work_dir / "photos")
    ours_s, stock_s = _seconds_per_photo(ours, photos), _seconds_per_photo(stock, photos)
    return {
        "export_first_seconds": round(first, 1),
        "export_seconds": round(again, 1),
        "pb_seconds_per_photo": round(ours_s, 4),
        "stock_arch_pb_seconds_per_photo": round(stock_s, 4),
        "pb_vs_stock_arch_speed": round(stock_s / ours_s, 2),
        "pb_megabytes": round(ours.stat().st_size / 1e6, 2),
        "stock_arch_pb_megabytes": round(stock.stat().st_size / 1e6, 2),
        "opencv_release": RELEASE,
        "description": (
            "first export builds the OpenCV venvs with no pip cache; per photo: digiKam's preprocessing + one "
            f"forward in OpenCV {RELEASE} (readNetFromTensorflow, one net), median over {PHOTOS - 1} photos"
        ),
    }
