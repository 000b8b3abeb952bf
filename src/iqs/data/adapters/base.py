"""Adapter registry and `load_source`, the checks every dataset shares (readers: `reading.py`).

An adapter turns one dataset's official files into a SampleTable (`load(cfg) -> DataFrame`).
`load_source` wraps it with the checks that are the same for every dataset: paths that stay inside
the root, unique ids, an optional group override, missing images and the table's structure.
Adapters may record where each row came from in `table.attrs` ("source_file", "source_lines") so that
those checks can name the file line instead of a table position.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from iqs.core.errors import DataError
from iqs.core.registry import Registry
from iqs.data.adapters.reading import (
    QUOTE,
    config_key,
    dataset_root,
    native_range,
    optional_file,
    raise_rows,
    read_table,
    required,
)
from iqs.data.table import is_safe_relative, validate_table

log = logging.getLogger("iqs.data.adapters")

Adapter = Callable[[Mapping], pd.DataFrame]
ADAPTERS: Registry[Adapter] = Registry("dataset adapter")


@dataclass
class SourceData:
    name: str
    root: Path
    table: pd.DataFrame
    missing: list[str] = field(default_factory=list)
    native_range: tuple[float, float] = (1.0, 10.0)


# --------------------------------------------------------------------------- load_source


def load_source(cfg: Mapping) -> SourceData:
    """Run the configured adapter and the checks shared by every dataset (see module docstring)."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"a dataset config must be a mapping (DictConfig or dict), got {type(cfg).__name__}")
    name = str(required(cfg, "name"))
    adapter_name = str(required(cfg, "adapter"))
    try:
        adapter = ADAPTERS.get(adapter_name)
    except KeyError as exc:
        raise DataError(f"{exc.args[0]} (set {config_key(cfg, 'adapter')})") from None
    lo_hi = native_range(cfg)
    root = dataset_root(cfg)

    table = adapter(cfg)
    source_file = table.attrs.pop("source_file", None)
    lines = table.attrs.pop("source_lines", None)
    table = table.reset_index(drop=True)
    where = _row_namer(source_file, lines)

    _check_paths(table, where)
    _check_duplicates(table, where)
    group_path = optional_file(cfg, "group_file")
    if group_path is not None:
        table = _apply_group_file(table, group_path)
    missing: list[str] = []
    if bool(cfg.get("check_images", True)):
        missing = find_missing_images(table, root, str(cfg.get("images") or "."), name)
    validate_table(table)
    return SourceData(name=name, root=root, table=table, missing=missing, native_range=lo_hi)


def _row_namer(source_file: str | None, lines: list[int] | None) -> Callable[[int], str]:
    if source_file is None or lines is None:
        return lambda i: f"table row {i}"
    return lambda i: f"{source_file}, row {lines[i]}"


def _check_paths(table: pd.DataFrame, where: Callable[[int], str]) -> None:
    paths = table["path"].to_numpy()
    # most paths are "<folder>/<id>.jpg": only those with a suspicious character need the full check
    suspicious = np.flatnonzero(
        table["path"].str.contains(r"\.\.|^[/\\]|^[A-Za-z]:", regex=True).to_numpy(dtype=bool)
    )
    bad = [i for i in suspicious if not is_safe_relative(str(paths[i]))]
    if bad:
        i = bad[0]
        raise DataError(
            f"{where(i)}: image path {paths[i]!r} escapes the dataset root (absolute or '..'); "
            f"paths must be relative to the root ({len(bad)} such row(s))."
        )


def _check_duplicates(table: pd.DataFrame, where: Callable[[int], str]) -> None:
    dup = table["image_id"].duplicated(keep=False).to_numpy()
    if not dup.any():
        return
    ids = table["image_id"].to_numpy()
    by_id: dict[str, list[int]] = {}
    for i in np.flatnonzero(dup):
        by_id.setdefault(str(ids[i]), []).append(int(i))
    shown = "; ".join(
        f"{k!r} at " + ", ".join(where(i) for i in rows) for k, rows in list(by_id.items())[:QUOTE]
    )
    raise DataError(
        f"duplicate image ids: {len(by_id)} id(s) appear more than once ({int(dup.sum())} rows): {shown}"
        f"{' ...' if len(by_id) > QUOTE else ''}. Each image must appear once."
    )


def _apply_group_file(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    groups = read_table(
        path, ["image_id", "group"], text=["image_id", "group"], expected="a CSV with columns image_id,group"
    )
    dup = groups["image_id"].duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(
            f"image id {groups['image_id'].iloc[i]!r} listed twice", file=path, row=int(groups.index[i])
        )
    empty = groups["group"].isna().to_numpy()
    if empty.any():
        raise DataError("empty group", file=path, row=int(groups.index[np.flatnonzero(empty)[0]]))
    known = groups["image_id"].isin(table["image_id"]).to_numpy()
    if not known.all():
        raise_rows(
            groups,
            ~known,
            path,
            "image id not in the dataset's annotations",
            lambda i: repr(groups["image_id"].iloc[i]),
        )
    mapping = pd.Series(groups["group"].to_numpy(), index=groups["image_id"].to_numpy())
    table = table.copy()
    override = table["image_id"].map(mapping)
    table["group"] = override.where(override.notna(), table["group"]).astype(str).to_numpy()
    return table


def find_missing_images(table: pd.DataFrame, root: Path, images: str, name: str) -> list[str]:
    """Paths (relative to root) whose file is absent. Not fatal: labels alone serve statistics."""
    paths = table["path"].astype(str)
    if len(paths) == 0:
        return []
    folder = root / images
    if not folder.is_dir():
        log.warning(
            "%s: image folder %s does not exist: all %d images are missing (labels are still usable; "
            "set check_images=false to skip this check)",
            name,
            folder,
            len(paths),
        )
        return paths.tolist()
    # one directory listing per folder instead of one stat per image (255k images)
    parents = paths.str.rpartition("/")[0]
    present = np.zeros(len(paths), dtype=bool)
    for parent, idx in paths.groupby(parents).groups.items():
        d = root / parent if parent else root
        try:
            with os.scandir(d) as it:
                names = {e.name for e in it if e.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            continue
        rows = paths.index.get_indexer(idx)
        present[rows] = paths.iloc[rows].str.rpartition("/")[2].isin(names).to_numpy()
    missing = paths[~present].tolist()
    if missing:
        log.warning(
            "%s: %d of %d images missing under %s (rows kept), e.g. %s",
            name,
            len(missing),
            len(paths),
            root,
            ", ".join(missing[:QUOTE]),
        )
    return missing


# --------------------------------------------------------------------------- vote histograms
