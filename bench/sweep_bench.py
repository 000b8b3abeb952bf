"""Cached sweep vs one uncached run on the demo.

The uncached run is the same job with `cache.enabled=false`: the frozen backbone runs over the images
at every step, as it would without the feature cache. The sweep is 12 configurations (head x rebalance x
thresholds) in one `iqs train -m`, with an empty cache at its start, so its first job pays for the
embeddings. Both use the same trainer settings; each goes to its own MLflow store and cache folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

EPOCHS = 5
SWEEP = ["head=regression,distribution,classification", "rebalance=none,sampler", "thresholds=t5_6,t4.5_6.5"]


def _iqs(work: Path, name: str, args: list[str]) -> float:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "IQS_ROOT": str(work / name)}
    env.pop("MLFLOW_TRACKING_URI", None)
    demo = Path(os.environ.get("IQS_DATA_DIR", "data")).resolve()
    cmd = [
        sys.executable,
        "-m",
        "iqs.cli",
        "train",
        *args,
        "experiment=demo",
        f"paths.data_dir={demo}",
        f"trainer.max_epochs={EPOCHS}",
        "callbacks.early_stopping.enabled=false",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run(work_dir: str | Path) -> dict:
    from iqs.data.demo import ensure_demo

    work = Path(work_dir)
    ensure_demo(Path(os.environ.get("IQS_DATA_DIR", "data")).resolve() / "demo", progress=False)
    uncached = _iqs(work, "uncached", ["cache.enabled=false"])
    sweep = _iqs(work, "sweep", ["-m", *SWEEP])
    return {
        "uncached_run_seconds": round(uncached, 1),
        "cached_sweep_12_seconds": round(sweep, 1),
        "sweep_cache_ratio": sweep / uncached,
        "sweep_bench_setting": f"demo, {EPOCHS} epochs, early stopping off, 12 configs vs 1 uncached",
    }


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run(d), indent=2))
