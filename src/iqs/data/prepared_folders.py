"""What each prepared folder holds, so a run whose prepare options differ from `iqs data prepare`'s says so.

A prepared folder's name is a hash of (root, short side, format), so `prepare.format=jpeg` shards are invisible
to a run with the default `prepare.format=raw`: without this note that run would decode every original image
again, silently and many times slower. `iqs data prepare` writes `prepared.json` into each folder; training
reads the notes of the folders it cannot use and names the options that would use them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from iqs.data.shard_format import ShardFormat

log = logging.getLogger(__name__)

NOTE = "prepared.json"


def write_note(out_dir: Path, source: str, root: str | Path, short_side: int, fmt: ShardFormat) -> None:
    note = {"source": source, "root": str(Path(root).resolve()), "short_side": int(short_side)}
    note |= {"format": fmt.name, "jpeg_quality": int(fmt.quality)}
    (out_dir / NOTE).write_text(json.dumps(note, indent=1))


def options_of(note: dict[str, Any]) -> str:
    """The command-line options that select the folder described by `note`."""
    options = f"prepare.short_side={note['short_side']} prepare.format={note['format']}"
    return options + (f" prepare.jpeg_quality={note['jpeg_quality']}" if note["format"] == "jpeg" else "")


def other_preparations(cache_dir: str | Path, source: str, root: str | Path) -> list[dict[str, Any]]:
    """Notes of the prepared folders of `source` at `root`, whatever their options (folders written before
    notes existed are not listed)."""
    found, root = [], str(Path(root).resolve())
    for path in sorted((Path(cache_dir) / "prepared").glob(f"{source}-*/{NOTE}")):
        try:
            note = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if note.get("source") == source and note.get("root") == root:
            found.append(note)
    return found


def warn_unused(cache_dir: str | Path, source: str, root: str | Path, wanted: str) -> None:
    """Warn when `source` was prepared, but with options other than this run's (`wanted`)."""
    others = other_preparations(cache_dir, source, root)
    if others:
        log.warning(
            "%s was prepared with other options (%s), not with this run's %s: training decodes the original "
            "images instead, which is much slower. Pass those options, or run `iqs data prepare` with this "
            "run's.",
            source,
            "; ".join(options_of(n) for n in others),
            wanted,
        )
