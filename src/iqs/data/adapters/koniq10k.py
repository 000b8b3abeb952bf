"""KonIQ-10k (Hosu et al., TIP 2020): 10,073 in-the-wild photos, ~120 votes each on a 1..5 ACR scale.

Two official CSVs share most columns but not the scale of `MOS`:
  koniq10k_scores_and_distributions.csv  c1..c5 counts, MOS on 1..5, SD, MOS_zscore on 0..100
  koniq10k_distributions_sets.csv        c1..c5 fractions, MOS on 0..100 (the rescaled z-score), SD, set
so the score column (`score_column`) and its scale (`native_range`) are declared in the config and a
value outside that range is an error, never clipped. The vote histogram is always c1..c5 on `vote_range`
(counts or fractions alike) and SD is on that vote scale. The official split is the `set` column, read
from the annotation file itself or from `split_file` (the sets file, joined on image_name).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from iqs.core.errors import DataError
from iqs.core.scale import std_to_common, votes_to_dist
from iqs.data.adapters.base import ADAPTERS
from iqs.data.adapters.columns import native_scores, text_ids
from iqs.data.adapters.reading import (
    attach_lines,
    groups,
    image_paths,
    log,
    native_range,
    numeric_column,
    optional_file,
    read_table,
    required,
    single_annotation_file,
    stated,
)
from iqs.data.table import make_table

COUNT_COLUMNS = [f"c{k}" for k in range(1, 6)]
SPLIT_NAMES = {"training": "train", "validation": "val", "test": "test", "train": "train", "val": "val"}


def _read_split_column(df: pd.DataFrame, column: str, path) -> np.ndarray:
    raw = df[column].astype(str).str.strip().str.lower()
    split = raw.map(SPLIT_NAMES)
    bad = split.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"column '{column}': unknown split {df[column].iloc[i]!r}; expected one of {sorted(set(SPLIT_NAMES))}",
            file=path,
            row=int(df.index[i]),
        )
    return split.to_numpy(dtype=object)


@ADAPTERS.register("koniq10k")
def load(cfg: Mapping) -> pd.DataFrame:
    name = str(cfg["name"])
    lo, hi = native_range(cfg)
    vlo, vhi = native_range(cfg, "vote_range")
    score_column = str(required(cfg, "score_column"))
    split_column = stated(cfg, "split_column")
    path = single_annotation_file(cfg)

    df = read_table(
        path,
        ["image_name", *COUNT_COLUMNS, score_column],
        optional=["SD", "c_total", *([split_column] if split_column else [])],
        text=["image_name", *([split_column] if split_column else [])],
        expected=f"a KonIQ-10k CSV with columns image_name, c1..c5, {score_column}",
    )
    ids = text_ids(df, "image_name", path, "image_name").to_numpy(dtype=str)
    raw, score = native_scores(df, score_column, path, cfg, lo, hi)
    hist = np.stack([numeric_column(df, c, path, valid=(0, np.inf)) for c in COUNT_COLUMNS], axis=1)
    empty = hist.sum(axis=1) <= 0
    if empty.any():
        raise DataError(
            "c1..c5 are all zero: no vote distribution",
            file=path,
            row=int(df.index[np.flatnonzero(empty)[0]]),
        )
    levels = np.linspace(vlo, vhi, len(COUNT_COLUMNS))

    n_votes, std = _votes_and_std(df, hist, path, vlo, vhi)
    split = None
    if split_column and split_column in df.columns:
        split = _read_split_column(df, split_column, path)
    stated(cfg, "split_file")  # null = no official split file
    split_file = optional_file(cfg, "split_file")
    if split is None and split_file is not None:
        split = _split_from_file(split_file, split_column or "set", ids, path, name)

    table = make_table(
        name,
        ids,
        image_paths(cfg, ids),
        raw_score=raw,
        score=score,
        dist=votes_to_dist(hist, levels, vlo, vhi),
        n_votes=n_votes,
        std=std,
        split=split,
        group=groups(cfg, ids),
    )
    return attach_lines(table, path, df.index)


def _votes_and_std(
    df: pd.DataFrame, hist: np.ndarray, path: Path, vlo: float, vhi: float
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Votes per image (c_total, else the counts' sum when they are counts) and the common-scale SD."""
    if "c_total" in df.columns:
        n_votes = numeric_column(df, "c_total", path, valid=(0, np.inf), allow_missing=True)
    elif np.allclose(hist, np.round(hist)):
        n_votes = hist.sum(axis=1)  # counts, not fractions
    else:
        n_votes = None
    std = None
    if "SD" in df.columns:
        std = std_to_common(numeric_column(df, "SD", path, valid=(0, np.inf), allow_missing=True), vlo, vhi)
    return n_votes, std


def _split_from_file(split_file: Path, column: str, ids: np.ndarray, path: Path, name: str) -> np.ndarray:
    """The official split joined on image_name; images the file does not list are left to the mixture."""
    sets = read_table(split_file, ["image_name", column], text=["image_name", column])
    mapping = pd.Series(_read_split_column(sets, column, split_file), index=sets["image_name"].str.strip())
    mapping = mapping[~mapping.index.duplicated()]
    split = pd.Series(ids).map(mapping).to_numpy(dtype=object)
    unlisted = pd.isna(split)
    if unlisted.any():
        log.warning(
            "%s: %d image(s) of %s are not in the split file %s (split left to the mixture), e.g. %s",
            name,
            int(unlisted.sum()),
            path,
            split_file,
            ", ".join(ids[unlisted][:5]),
        )
        split = np.where(unlisted, None, split)
    return split
