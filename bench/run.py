"""`make bench`: every benchmark, each measured side by side in one run; writes bench/results.json.

Ratios, not absolute times, are the goals: this machine is noisy, and a ratio of two rates measured in the
same run cancels most of the noise.

results.json holds one block per benchmark: its results and the run they came from (run id, command,
machine, date, load average before it started). `--only` replaces the blocks it reruns and leaves the others
with their own run, so numbers from different runs are never shown under one machine and date.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# (module in bench/, what it measures)
BENCHMARKS = {
    "parse_annotations": "AVA.txt (255k rows) and EVA votes (137k rows) parsing",
    "loader_bench": "prepared loader vs raw full-size decode vs fine-tune step",
    "sweep_bench": "12-config cached sweep vs one uncached run",
    "predict_bench": "iqs predict vs the cores' limit (decode + model per photo), naive loop, bare model",
    "shard_format_bench": "JPEG vs raw prepared shards: bytes, decode on 2 loader workers, fine-tune step",
    "export_bench": "iqs export of the demo run (first, later) and the .pb vs an InceptionV3 .pb in OpenCV 4.10",
    "coverage_bench": "coverage of the 95% intervals on simulated test sets of 3 to 100 photographs",
}
GOALS = {
    "sweep_cache_ratio": ("<=", 1.5),
    "loader_vs_step_ratio": (">=", 2.0),
    "prepared_vs_raw_decode_ratio": (">", 1.0),
    "ava_parse_seconds": ("<=", 2.0),
    "eva_votes_seconds": ("<=", 2.0),
    "predict_vs_naive_ratio": (">=", 4.0),
    "predict_vs_limit_ratio": (">=", 0.9),
    "jpeg_decode_vs_train_step": (">=", 2.0),
    "jpeg_loader_vs_train_step": (">=", 2.0),
    "jpeg_vs_raw_bytes_ratio": ("<=", 0.25),
    "photo_jpeg_vs_raw_bytes_ratio": ("<=", 0.25),
    "export_first_seconds": ("<=", 180.0),
    "export_seconds": ("<=", 30.0),
    "pb_vs_stock_arch_speed": (">=", 2.0),
    # the demo's CV case and more: SRCC and PLCC intervals cover (iqs.metrics.interval_rule)
    **{f"ci_coverage_{n}groups_{m}": (">=", 0.93) for n in (15, 30, 100) for m in ("srcc", "plcc")},
}
# Shown without a goal (information only); see the benchmark's docstring.
INFO_ONLY = {
    "predict_vs_model_ratio",
    "predict_vs_limit_ratio_beside_load",
    "jpeg_decode_vs_raw",
    "jpeg_loader_vs_raw_loader",
}


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
    }


def _scheduler() -> str:
    """SCHED_OTHER normally; SCHED_RR/FIFO when the run was started under `chrt` (recorded, never hidden)."""
    try:
        policy = os.sched_getscheduler(0)
        names = ("SCHED_OTHER", "SCHED_BATCH", "SCHED_IDLE", "SCHED_FIFO", "SCHED_RR")
        return next((n for n in names if getattr(os, n, None) == policy), "unknown")
    except (AttributeError, OSError):  # not Linux
        return "unknown"


def _load_results(out: Path) -> dict:
    results = json.loads(out.read_text()) if out.exists() else {}
    if any(name not in BENCHMARKS for name in results):  # the old flat layout: one machine for mixed runs
        return {}
    return results


def render(results: dict) -> Any:
    """The results, one section per benchmark headed by the run it came from."""
    from rich.table import Table

    table = Table(title="benchmarks (each from the run named under it)")
    table.add_column("key", no_wrap=True)
    for col in ("value", "goal", "met"):
        table.add_column(col)
    for name in BENCHMARKS:
        if name not in results:
            continue
        block = results[name]
        origin = block["run"]
        table.add_row(f"[bold]{name}[/]", f"run {origin['id']}", f"{origin['machine']['cores']} cores", "")
        for key, value in sorted(block["results"].items()):
            if isinstance(value, dict | str):  # descriptions and notes: in the JSON, not the table
                continue
            goal = GOALS.get(key)
            met = "info only" if key in INFO_ONLY else ""
            if goal and isinstance(value, int | float):
                op, target = goal
                ok = {"<=": value <= target, ">=": value >= target, ">": value > target}[op]
                met = "[green]yes[/]" if ok else "[red]no[/]"
            shown = f"{value:.3g}" if isinstance(value, float) else str(value)
            table.add_row(key, shown, f"{goal[0]} {goal[1]}" if goal else "", met)
        table.add_section()
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args()

    from rich.console import Console

    console = Console()
    out = Path(args.out)
    results = _load_results(out)
    run = {
        "id": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python bench/run.py" + (" --only " + " ".join(args.only) if args.only else ""),
        "machine": machine(),
    }
    for name in args.only or BENCHMARKS:
        console.print(f"[bold]{name}[/]: {BENCHMARKS[name]}")
        started = {
            "date": time.strftime("%Y-%m-%d"),
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
            "scheduler": _scheduler(),
        }
        with tempfile.TemporaryDirectory(prefix=f"iqs-bench-{name}-") as work:
            t0 = time.perf_counter()
            got = importlib.import_module(name).run(work)
            got[f"{name}_wall_seconds"] = round(time.perf_counter() - t0, 1)
        results[name] = {"run": {**run, **started}, "results": got}
        out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")

    table = render(results)
    console.print(table)
    console.print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
