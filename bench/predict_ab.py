"""A/B: the current `predict_paths` against the design before it (git e155b56), in one process, alternating.

The earlier design decoded in a thread pool and ran batches of 16 through onnxruntime on all cores in the
main thread. Each round measures the limit and the current design (predict_bench's round), then the
earlier design on the same photos, against the same limit. Not part of `make bench`; run:

    python bench/predict_ab.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
BEFORE = "e155b56"  # the last commit with the decode-pool + main-thread batch design


def _load_before(tmp: Path):
    source = subprocess.run(
        ["git", "-C", str(HERE), "show", f"{BEFORE}:src/iqs/deploy/predict/scorer.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = tmp / "predict_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("predict_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["predict_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()

    import predict_bench as pb

    from iqs.deploy.export import exporter as export
    from iqs.deploy.predict.scorer import OnnxScorer, predict_paths

    with tempfile.TemporaryDirectory(prefix="iqs-ab-") as tmp:
        work = Path(tmp)
        before = _load_before(work)
        photos = pb.make_photos(work)
        model = pb._model()
        onnx = export.export_model(model, model.meta, work, "ab", ["full"], 17, "ab", verify=False)["full"]
        now_scorer, before_scorer = OnnxScorer(onnx), before.OnnxScorer(onnx)  # each with its own defaults
        stream = photos * pb.STREAM_REPEAT
        list(predict_paths(photos, now_scorer))
        list(before.predict_paths(photos, before_scorer, batch_size=16))
        print("round  limit img/s  now img/s (ratio)  before img/s (ratio)")
        for i in range(args.rounds):
            m = pb._measure_round(photos, stream, now_scorer)
            start = time.perf_counter()
            list(before.predict_paths(stream, before_scorer, batch_size=16))
            before_ips = len(stream) / (time.perf_counter() - start)
            print(
                f"{i:5d}  {m['limit_ips']:11.1f}  {m['predict_ips']:9.1f} ({m['ratio']:.2f})"
                f"  {before_ips:12.1f} ({before_ips / m['limit_ips']:.2f})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
