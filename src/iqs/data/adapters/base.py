"""Adapter registry, `load_source` and the validated annotation readers every adapter shares.

An adapter turns one dataset's official files into a SampleTable (`load(cfg) -> DataFrame`).
`load_source` wraps it with the checks that are the same for every dataset: paths that stay inside
the root, unique ids, an optional group override, missing images and the table's structure.
Adapters may record where each row came from in `table.attrs` ("source_file", "source_lines") so that
those checks can name the file line instead of a table position.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, ListConfig
from omegaconf.errors import MissingMandatoryValue

from iqs.data.errors import DataError
from iqs.data.table import is_safe_relative, validate_table
from iqs.registry import Registry

log = logging.getLogger("iqs.data.adapters")

Adapter = Callable[[Mapping], pd.DataFrame]
ADAPTERS: Registry[Adapter] = Registry("dataset adapter")

# how many offending rows or ids an error message quotes before giving only the count
QUOTE = 5


@dataclass
class SourceData:
    name: str
    root: Path
    table: pd.DataFrame
    missing: list[str] = field(default_factory=list)
    native_range: tuple[float, float] = (1.0, 10.0)


# --------------------------------------------------------------------------- config access


def config_key(cfg: Mapping, key: str) -> str:
    """The full dotted key of `key` as the user must spell it on the command line."""
    if isinstance(cfg, DictConfig):
        try:
            return cfg._get_full_key(key)
        except Exception:  # a detached node: fall through to the generic spelling
            pass
    name = cfg.get("name", "<name>") if isinstance(cfg, Mapping) else "<name>"
    return f"dataset.{key} (data.sources.{name}.{key} in a mixture)"


def setting(cfg: Mapping, key: str, value: str) -> str:
    """How to set `key` on the command line, e.g. `dataset.root=/data/AVA`."""
    if isinstance(cfg, DictConfig):
        try:
            return f"{cfg._get_full_key(key)}={value}"
        except Exception:
            pass
    name = cfg.get("name", "<name>")
    return f"dataset.{key}={value} (data.sources.{name}.{key}={value} in a mixture)"


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


def plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
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


def optional_file(cfg: Mapping, key: str, default: str | None = None) -> Path | None:
    """A config key naming an optional file relative to the root (null = not used); must exist when set."""
    value = cfg.get(key, default)
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
        _raise_rows(df, bad, path, f"column '{column}': not a number", lambda i: repr(raw.iloc[i]))
    ok = np.isfinite(values)
    if integer:
        frac = ok & (values != np.round(values))
        if frac.any():
            _raise_rows(df, frac, path, f"column '{column}': not an integer", lambda i: repr(raw.iloc[i]))
    if valid is not None:
        lo, hi = valid
        out = ok & ((values < lo) | (values > hi))
        if out.any():
            fix = f" If the file is right, declare its scale: {range_key}." if range_key else ""
            _raise_rows(
                df,
                out,
                path,
                f"column '{column}': value outside the declared range [{lo:g}, {hi:g}]",
                lambda i: f"{values[i]:g}",
                suffix=fix,
            )
    return values


def _raise_rows(
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
        _raise_rows(
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


def vote_stats(counts: np.ndarray, levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_votes, mean, std) of per-image vote histograms (N, L) over `levels` (native scale).

    std is the population standard deviation of the votes (as AVA/NIMA report it); rows without votes give NaN.
    """
    counts = np.asarray(counts, dtype=np.float64)
    lv = np.asarray(levels, dtype=np.float64)
    n = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = counts @ lv / n
        var = (counts @ lv**2) / n - mean**2
    return n, mean, np.sqrt(np.maximum(var, 0.0))


def drop_unvoted(n_votes: np.ndarray, ids: np.ndarray, name: str, path: Path | str) -> np.ndarray:
    """Mask of rows with at least one vote; the others are dropped with a warning that counts them."""
    keep = n_votes > 0
    if not keep.all():
        dropped = np.asarray(ids)[~keep]
        log.warning(
            "%s: dropped %d image(s) without any vote in %s (e.g. %s)",
            name,
            len(dropped),
            path,
            ", ".join(map(str, dropped[:QUOTE])),
        )
    return keep


def check_levels(cfg: Mapping, levels: Sequence[float], what: str, key: str = "native_range") -> None:
    """The vote levels a format defines must lie inside the declared range, or scores leave [1, 10]."""
    lo, hi = native_range(cfg, key)
    if min(levels) < lo or max(levels) > hi:
        raise DataError(
            f"{what} are {min(levels):g}..{max(levels):g}, outside {config_key(cfg, key)}=[{lo:g}, {hi:g}]; "
            f"declare a range that contains them."
        )


def single_annotation_file(cfg: Mapping, key: str = "annotations") -> Path:
    """For formats that are one file: `cfg[key]` must name exactly one."""
    paths = annotation_files(cfg, key)
    if len(paths) != 1:
        raise DataError(
            f"adapter '{cfg.get('adapter')}' reads one annotation file, got {len(paths)}: "
            f"set {setting(cfg, key, '<one file>')}"
        )
    return paths[0]
