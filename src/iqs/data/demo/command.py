"""`iqs data build-demo [out_dir=...] [seed=...] [force=true]`: build the demo and summarise it."""

from __future__ import annotations

import difflib
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from iqs.data.demo.build import ensure_demo, read_build

KEYS = ("out_dir", "seed", "force")
USAGE = "usage: iqs data build-demo [out_dir=PATH] [seed=INT] [force=true|false]"


def default_out_dir() -> Path:
    """`$IQS_DATA_DIR/demo`, else `<$IQS_ROOT or .>/data/demo`, as conf/paths/default.yaml resolves data_dir."""
    data_dir = os.environ.get("IQS_DATA_DIR")
    if data_dir:
        return Path(data_dir) / "demo"
    return Path(os.environ.get("IQS_ROOT", ".")) / "data" / "demo"


def parse_overrides(argv: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")
        if not sep or not key:
            raise ValueError(f"expected key=value, got '{arg}'\n{USAGE}")
        if key not in KEYS:
            hint = difflib.get_close_matches(key, KEYS, n=1)
            raise ValueError(
                f"unknown key '{key}'" + (f"; did you mean '{hint[0]}'?" if hint else "") + f"\n{USAGE}"
            )
        out[key] = value
    return out


def _bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{key} must be true or false, got '{value}'")


def summary_table(record: dict, built_now: bool, wall_s: float) -> Table:
    title = (
        f"demo dataset v{record['version']}, seed {record['seed']}: {record['references']} reference crops "
        f"of {len(record['photos'])} photos, {record['images']} images, "
        + (f"built in {record['seconds']:.1f} s" if built_now else f"up to date (checked in {wall_s:.2f} s)")
    )
    t = Table(title=title)
    # native scale first, then the common 1..10 scale the mixture labels on
    for col in ("source", "images", "range", "mean", "sd", "mean 1-10", "sd 1-10", "votes"):
        t.add_column(col, justify="left" if col == "source" else "right", no_wrap=True)
    for name, s in record["sources"].items():
        lo, hi = s["native_range"]
        t.add_row(
            f"demo_{name}",
            str(s["images"]),
            f"{lo:g}..{hi:g}",
            f"{s['native_mean']:.2f}",
            f"{s['native_sd']:.2f}",
            f"{s['common_mean']:.2f}",
            f"{s['common_sd']:.2f}",
            f"{s['votes_per_image']:.0f}",
        )
    return t


def main(argv: list[str] | None = None) -> int:
    console = Console()
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        console.print(escape(USAGE))
        return 0
    try:
        opts = parse_overrides(argv)
        seed = int(opts.get("seed", "0"))
        force = _bool("force", opts.get("force", "false"))
    except ValueError as exc:
        console.print(f"[red]iqs data build-demo: {escape(str(exc))}[/red]")
        return 2
    out_dir = Path(opts["out_dir"]) if "out_dir" in opts else default_out_dir()
    before = read_build(out_dir)
    start = time.perf_counter()
    ensure_demo(out_dir, seed, force=force)
    wall = time.perf_counter() - start
    record = read_build(out_dir)
    assert record is not None
    built_now = force or before != record
    console.print(summary_table(record, built_now, wall))
    console.print(f"written to {out_dir.resolve()}")
    return 0
