"""`iqs data build-demo [out_dir=...] [seed=...] [force=true]`: build the demo and summarise it (conf/demo.yaml)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from iqs.core.config import compose
from iqs.core.errors import DataError
from iqs.data.demo.build import ensure_demo, read_build


@dataclass
class DemoOptions:
    """The types of conf/demo.yaml's keys (the values, defaults included, come from the yaml): `seed=x` or
    `force=maybe` fail here, naming the key."""

    out_dir: str
    seed: int
    force: bool


def options(argv: list[str] | None = None) -> DemoOptions:
    """conf/demo.yaml composed with `argv` (`key=value`), checked against `DemoOptions`."""
    cfg = compose("demo", list(argv or []))
    own = {key: cfg[key] for key in cfg if key != "paths"}  # resolved: out_dir follows conf/paths
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DemoOptions), own))


def default_out_dir() -> Path:
    """conf/demo.yaml's out_dir: `${paths.data_dir}/demo` ($IQS_DATA_DIR, $IQS_ROOT as conf/paths says)."""
    return Path(options().out_dir)


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
    try:
        opts = options(list(argv or []))
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        console.print(
            f"[red]iqs data build-demo: {escape(str(exc))}[/red]\n(see `iqs data build-demo --help`)"
        )
        return 2
    out_dir = Path(opts.out_dir)
    before = read_build(out_dir)
    start = time.perf_counter()
    try:
        ensure_demo(out_dir, opts.seed, force=opts.force)
    except DataError as exc:
        console.print(f"[red]iqs data build-demo: {escape(str(exc))}[/red]", soft_wrap=True)
        return 2
    wall = time.perf_counter() - start
    record = read_build(out_dir)
    assert record is not None
    built_now = opts.force or before != record
    console.print(summary_table(record, built_now, wall))
    console.print(f"written to {out_dir.resolve()}")
    return 0
