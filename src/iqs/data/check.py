"""`iqs data check`: decode every image of a mixture once, in parallel, and list the unreadable ones.

    iqs data check data=ava_eva
    iqs data check data=demo workers=2 report=outputs/demo-unreadable

Prints a narrow table (file, source, id, reason), writes every unreadable image to `<report>.csv` and
`<report>.json`, and exits 1 when there are any (0 when all decode, 2 on a bad config). The check is the one
training runs (iqs.data.bad_images); this command decodes everything afresh and refreshes the per-file record
training reads, so a run after it decodes nothing again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from iqs.core.errors import DataError
from iqs.data.bad_images import find_bad_images


def print_table(bad: pd.DataFrame, console: Any, title: str, limit: int = 50) -> None:
    """A narrow table (file, source, id, reason) of the first `limit` unreadable images."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("source")
    table.add_column("id")
    table.add_column("reason", overflow="fold")
    for r in bad.head(limit).itertuples():
        table.add_row(r.path, r.dataset, str(r.image_id), r.reason)
    console.print(table)
    if len(bad) > limit:
        console.print(f"... and {len(bad) - limit} more")


def write_report(bad: pd.DataFrame, stem: str | Path) -> tuple[Path, Path]:
    """`<stem>.csv` and `<stem>.json` (a list of records), both with COLUMNS."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    bad.to_csv(csv_path, index=False)
    json_path.write_text(json.dumps(bad.to_dict(orient="records"), indent=1) + "\n")
    return csv_path, json_path


def main(argv: list[str] | None = None) -> int:
    """`iqs data check [key=value ...]` (conf/check.yaml): 0 all readable, 1 some unreadable, 2 bad config."""
    from rich.console import Console

    from iqs.core.config import compose
    from iqs.data.mixture import ConfigError, build_mixture, ensure_data

    console = Console(stderr=True)
    try:
        cfg = compose("check", list(argv or []))
        ensure_data(cfg.data)
        mix = build_mixture(cfg.data, cfg.thresholds)
    except (DataError, ConfigError, FileNotFoundError) as exc:
        # soft_wrap: the message names a path; wrapped at the width it could not be copied whole
        console.print(f"[red]iqs data check:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        return 2
    table = mix.table
    bad = find_bad_images(
        table,
        mix.abs_paths(table),
        mix.roots,
        cache_dir=cfg.paths.cache_dir,
        fresh=True,
        workers=cfg.workers,
        progress=bool(cfg.progress),
    )
    csv_path, json_path = write_report(bad, str(cfg.report))
    out = Console(width=None if sys.stdout.isatty() else 100)
    if bad.empty:
        out.print(
            f"all {len(table)} images of {mix.name} decode ({len(mix.roots)} source(s)); report {csv_path}"
        )
        return 0
    print_table(bad, out, f"{len(bad)} of {len(table)} images of {mix.name} are unreadable")
    console.print(
        f"[red]{len(bad)} unreadable image(s)[/]; full list: {csv_path} and {json_path}.\n"
        "Replace or remove them and check again, or let training skip them: data.on_bad_image=skip "
        "(the default) drops up to data.max_bad_fraction of each source.",
        highlight=False,
    )
    return 1
