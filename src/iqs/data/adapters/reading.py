"""Validated reading of annotation files and config values, shared by every dataset adapter.

Errors name the file, the 1-based line (header = line 1) and the config key to fix, and never clip a value.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from iqs.core.errors import DataError
from iqs.data.mixture_config import plain  # re-exported: the adapters' one OmegaConf -> dict/list converter

log = logging.getLogger("iqs.data.adapters")

# how many offending rows or ids an error message quotes before giving only the count
QUOTE = 5


# --------------------------------------------------------------------------- config access


def _full_key(cfg: Mapping, key: str) -> str | None:
    """`key`'s dotted path in the composed config (e.g. data.sources.ava.root), None for a plain mapping or a
    detached node. OmegaConf has no public way to a node's path: `_get_full_key` is pinned by
    tests/test_private_api.py."""
    if isinstance(cfg, DictConfig):
        try:
            return cfg._get_full_key(key) or None
        except Exception:  # a detached node: the caller falls back to the generic spelling
            return None
    return None


def config_key(cfg: Mapping, key: str) -> str:
    """The full dotted key of `key` as the user must spell it on the command line."""
    name = cfg.get("name", "<name>") if isinstance(cfg, Mapping) else "<name>"
    return _full_key(cfg, key) or f"dataset.{key} (data.sources.{name}.{key} in a mixture)"


def setting(cfg: Mapping, key: str, value: str) -> str:
    """How to set `key` on the command line, e.g. `dataset.root=/data/AVA`."""
    full = _full_key(cfg, key)
    name = cfg.get("name", "<name>")
    return (
        f"{full}={value}"
        if full
        else f"dataset.{key}={value} (data.sources.{name}.{key}={value} in a mixture)"
    )


def stated(cfg: Mapping, key: str) -> Any:
    """`cfg[key]`, which may be null but must be there: the dataset yaml states every key its adapter reads."""
    if key not in cfg:
        raise DataError(f"config key {config_key(cfg, key)} is missing for dataset '{cfg.get('name')}'")
    return cfg[key]


def groups(cfg: Mapping, ids: Any) -> pd.Series:
    """`<group_prefix>:<id>` per row: one group per image unless a group_file says otherwise.

    A null prefix (the csv adapter's default) means the dataset's name.
    """
    prefix = stated(cfg, "group_prefix")
    return str(prefix if prefix is not None else required(cfg, "name")) + ":" + pd.Series(ids)


def required(cfg: Mapping, key: str) -> Any:
    try:
        value = cfg[key]
    except (KeyError, MissingMandatoryValue):
        value = None
    except Exception as exc:  # an interpolation that cannot resolve, e.g. an unset env variable
        raise DataError(f"config key {config_key(cfg, key)} cannot be resolved: {exc}") from exc
    if value is None or (isinstance(value, str) and value in ("", "???")):
        raise DataError(f"config key {config_key(cfg, key)} is required for dataset '{cfg.get('name')}'")
    return value


def native_range(cfg: Mapping, key: str = "native_range") -> tuple[float, float]:
    value = plain(required(cfg, key))
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"config key {config_key(cfg, key)} must be [lo, hi], got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise DataError(f"config key {config_key(cfg, key)} must satisfy lo < hi, got [{lo}, {hi}]")
    return lo, hi


def positive_setting(cfg: Mapping, key: str, default: float | None = None) -> float:
    """`cfg[key]` as a float that must be > 0; required unless a `default` is given."""
    value = float(required(cfg, key) if default is None else cfg.get(key, default))
    if not value > 0:
        raise DataError(f"{config_key(cfg, key)} must be > 0, got {value}")
    return value


def dataset_root(cfg: Mapping) -> Path:
    return Path(str(required(cfg, "root"))).expanduser()


def annotation_files(cfg: Mapping, key: str = "annotations") -> list[Path]:
    """`cfg[key]` (one path or a list, relative to the root) as existing files; else a DataError saying what to set."""
    root = dataset_root(cfg)
    value = plain(required(cfg, key))
    names = [value] if isinstance(value, str | os.PathLike) else list(value)
    paths = [root / str(n) for n in names]
    for path in paths:
        if not path.is_file():
            where = (
                f"the dataset root {root} does not exist" if not root.is_dir() else f"no such file in {root}"
            )
            raise DataError(
                f"annotation file not found ({where}). Set {setting(cfg, 'root', '<folder holding it>')}, "
                f"or {setting(cfg, key, '<path relative to the root>')}.",
                file=path,
            )
    return paths


def optional_file(cfg: Mapping, key: str) -> Path | None:
    """A config key naming an optional file relative to the root (null = not used); must exist when set."""
    value = cfg.get(key)
    if value in (None, ""):
        return None
    path = dataset_root(cfg) / str(value)
    if not path.is_file():
        raise DataError(
            f"file given by {config_key(cfg, key)} not found. Fix the path, or set {setting(cfg, key, 'null')}.",
            file=path,
        )
    return path


def image_paths(cfg: Mapping, names: pd.Series | np.ndarray, suffix: str = "") -> pd.Series:
    """`<images>/<name><suffix>` relative to the root (no leading "./" when images is the root itself)."""
    folder = str(cfg.get("images") or ".").strip().rstrip("/")
    names = pd.Series(np.asarray(names, dtype=str))
    return names + suffix if folder in ("", ".") else folder + "/" + names + suffix


# --------------------------------------------------------------------------- validated reading


def sniff(path: Path, expected: str) -> str:
    """First text of a file; rejects empty files and web pages saved under a data file's name."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    text = head.decode("utf-8-sig", errors="replace")
    if not text.strip():
        raise DataError(f"the file is empty; expected {expected}.", file=path)
    low = text.lstrip().lower()
    if low.startswith(("<!doctype", "<html", "<?xml", "<head", "<!--")) or "<html" in low[:1024]:
        raise DataError(
            f"this does not look like the expected annotation file ({expected}): it is an HTML page. "
            "It was probably saved from a web page (e.g. a GitHub file view) instead of downloaded raw; "
            "download the raw file (GitHub's 'Raw' button, or the dataset's official archive) and point the "
            "config at it.",
            file=path,
        )
    return text


def read_table(
    path: Path,
    columns: Sequence[str],
    *,
    sep: str = ",",
    optional: Sequence[str] = (),
    text: Sequence[str] = (),
    expected: str | None = None,
) -> pd.DataFrame:
    """Read a delimited annotation file, keeping only `columns` (required) and `optional` (if present).

    Columns in `text` are read as strings; every other column is left to `numeric_column`. The index of the
    result is the 1-based line number in the file (header = line 1), so every later error can name it.
    """
    expected = expected or f"a '{sep}'-separated file with columns {', '.join(columns)}"
    sniff(path, expected)
    try:
        header = pd.read_csv(path, sep=sep, nrows=0, encoding="utf-8-sig").columns
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read the header ({exc}); expected {expected}.", file=path) from None
    found = [str(c).strip() for c in header]
    missing = [c for c in columns if c not in found]
    if missing:
        shown = ", ".join(repr(c) for c in found[:15]) + (
            f", ... ({len(found)} in all)" if len(found) > 15 else ""
        )
        hint = (
            " It does not look like the expected file: check that it is the right, unmodified file."
            if len(found) <= 1 or not set(columns) & set(found)
            else ""
        )
        raise DataError(
            f"missing column(s) {missing}. Expected columns: {list(columns)}; found: [{shown}].{hint}",
            file=path,
        )
    want = [*columns, *[c for c in optional if c in found and c not in columns]]
    raw_name = {str(c).strip(): c for c in header}
    try:
        df = pd.read_csv(
            path,
            sep=sep,
            usecols=[raw_name[c] for c in want],
            dtype=dict.fromkeys((raw_name[c] for c in want if c in text), str),
            encoding="utf-8-sig",
            skip_blank_lines=False,
            keep_default_na=False,
            na_values=[""],
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot parse as {expected}: {exc}", file=path) from None
    df.columns = [str(c).strip() for c in df.columns]
    df.index = np.arange(2, len(df) + 2)  # line numbers: header is line 1
    blank = df.isna().all(axis=1)
    if blank.any():
        df = df[~blank]
    if df.empty:
        raise DataError(f"the file has a header but no data rows; expected {expected}.", file=path)
    return df


def numeric_column(
    df: pd.DataFrame,
    column: str,
    path: Path,
    *,
    valid: tuple[float, float] | None = None,
    range_key: str | None = None,
    integer: bool = False,
    allow_missing: bool = False,
) -> np.ndarray:
    """A column as float64; unparsable, non-integer (if `integer`) or out-of-range values are DataErrors.

    `df.index` must hold file line numbers (as `read_table` gives). Values are never clipped: a value
    outside the declared range usually means the range (or the file) is not the one the config assumes.
    """
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if allow_missing:
        bad &= raw.notna().to_numpy()
    if bad.any():
        raise_rows(df, bad, path, f"column '{column}': not a number", lambda i: repr(raw.iloc[i]))
    ok = np.isfinite(values)
    if integer:
        frac = ok & (values != np.round(values))
        if frac.any():
            raise_rows(df, frac, path, f"column '{column}': not an integer", lambda i: repr(raw.iloc[i]))
    if valid is not None:
        lo, hi = valid
        out = ok & ((values < lo) | (values > hi))
        if out.any():
            fix = f" If the file is right, declare its scale: {range_key}." if range_key else ""
            raise_rows(
                df,
                out,
                path,
                f"column '{column}': value outside the declared range [{lo:g}, {hi:g}]",
                lambda i: f"{values[i]:g}",
                suffix=fix,
            )
    return values


def raise_rows(
    df: pd.DataFrame,
    mask: np.ndarray,
    path: Path,
    what: str,
    show: Callable[[int], str],
    suffix: str = "",
) -> None:
    idx = np.flatnonzero(mask)
    lines = df.index.to_numpy()
    first = int(lines[idx[0]])
    more = ""
    if len(idx) > 1:
        others = ", ".join(f"row {int(lines[i])}: {show(i)}" for i in idx[1:QUOTE])
        more = f" ({len(idx)} rows in all; also {others}{', ...' if len(idx) > QUOTE else ''})"
    raise DataError(f"{what}: {show(idx[0])}{more}.{suffix}", file=path, row=first)


def read_id_list(path: Path) -> set[str]:
    """One id per line (AVA's .jpgl lists); blank lines ignored."""
    sniff(path, "a list of image ids, one per line")
    ids = pd.read_csv(path, header=None, dtype=str, names=["id"], skip_blank_lines=True)["id"].str.strip()
    return set(ids[ids != ""])


def attach_lines(table: pd.DataFrame, path: Path, lines: Iterable[int]) -> pd.DataFrame:
    """Remember each row's file and line (read by `load_source` to name rows in its errors)."""
    table.attrs["source_file"] = str(path)
    table.attrs["source_lines"] = [int(x) for x in lines]
    return table


def single_annotation_file(cfg: Mapping, key: str = "annotations") -> Path:
    """For formats that are one file: `cfg[key]` must name exactly one."""
    paths = annotation_files(cfg, key)
    if len(paths) != 1:
        raise DataError(
            f"adapter '{cfg.get('adapter')}' reads one annotation file, got {len(paths)}: "
            f"set {setting(cfg, key, '<one file>')}"
        )
    return paths[0]
