"""Columns most adapters turn into a SampleTable the same way: ids, scores on their native range, and a
Gaussian distribution for datasets that publish only a mean score."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqs.core.errors import DataError
from iqs.core.scale import gaussian_dist, to_common
from iqs.data.adapters.reading import (
    native_range,
    numeric_column,
    positive_setting,
    setting,
    single_annotation_file,
)
from iqs.data.table import make_table


def text_ids(df: pd.DataFrame, column: str, path: Path, what: str) -> pd.Series:
    """A text column of ids or paths, stripped; an empty one is a DataError naming `what` and its line."""
    ids = df[column].str.strip()
    empty = (ids.isna() | (ids == "")).to_numpy()
    if empty.any():
        raise DataError(f"empty {what}", file=path, row=int(df.index[np.flatnonzero(empty)[0]]))
    return ids


def native_scores(
    df: pd.DataFrame, column: str, path: Path, cfg: Mapping, lo: float, hi: float
) -> tuple[np.ndarray, np.ndarray]:
    """The score column on its declared native range [lo, hi], and the same scores on the common scale."""
    raw = numeric_column(df, column, path, valid=(lo, hi), range_key=setting(cfg, "native_range", "[lo, hi]"))
    return raw, to_common(raw, lo, hi)


def gaussian_table(
    name: str,
    ids: Any,
    paths: Any,
    raw: np.ndarray,
    score: np.ndarray,
    sigma: float | np.ndarray,
    *,
    group: Any,
    split: Any = None,
    std: np.ndarray | None = None,
) -> pd.DataFrame:
    """A SampleTable for a dataset with only a mean score: a discretised Gaussian of `sigma` around it."""
    return make_table(
        name,
        ids,
        paths,
        raw_score=raw,
        score=score,
        dist=gaussian_dist(score, np.broadcast_to(np.asarray(sigma, dtype=np.float64), np.shape(score))),
        std=std,
        split=split,
        group=group,
    )


def mean_only_settings(cfg: Mapping) -> tuple[str, float, float, float, Path]:
    """A mean-score dataset's name, native range, `default_std` (> 0, common scale) and its one annotation
    file."""
    name = str(cfg["name"])
    lo, hi = native_range(cfg)
    default_std = positive_setting(cfg, "default_std")
    return name, lo, hi, default_std, single_annotation_file(cfg)
