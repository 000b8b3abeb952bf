"""A researcher's own dataset: a CSV `path,score[,std][,split]` with a declared native range.

`path` is relative to the dataset root and doubles as the image id. `std`, when present, is on the native
scale and gives a discretised Gaussian distribution; rows without it use `default_std` (common scale).
`split` may hold train / val / test or be empty (then the mixture assigns a seeded split by group).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from iqs.core.errors import DataError
from iqs.core.scale import std_to_common
from iqs.data.adapters.base import ADAPTERS
from iqs.data.adapters.columns import gaussian_table, mean_only_settings, native_scores, text_ids
from iqs.data.adapters.reading import attach_lines, groups, numeric_column, read_table
from iqs.data.table import SPLITS


@ADAPTERS.register("csv")
def load(cfg: Mapping) -> pd.DataFrame:
    name, lo, hi, default_std, path = mean_only_settings(cfg)

    df = read_table(
        path,
        ["path", "score"],
        optional=["std", "split"],
        text=["path", "split"],
        expected="a CSV with columns path,score and optionally std,split",
    )
    paths = text_ids(df, "path", path, "path").str.replace("\\", "/", regex=False).to_numpy(dtype=str)
    raw, score = native_scores(df, "score", path, cfg, lo, hi)

    std = np.full(len(df), np.nan)
    if "std" in df.columns:
        std = std_to_common(numeric_column(df, "std", path, valid=(0, np.inf), allow_missing=True), lo, hi)
    sigma = np.where(np.isfinite(std) & (std > 0), std, default_std)

    split = None
    if "split" in df.columns:
        values = df["split"].fillna("").str.strip().str.lower()
        bad = ~values.isin(["", *SPLITS])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"column 'split': unknown value {df['split'].iloc[i]!r}; use train, val, test or leave it empty",
                file=path,
                row=int(df.index[i]),
            )
        split = np.where(values.to_numpy(dtype=object) == "", None, values.to_numpy(dtype=object))

    table = gaussian_table(
        name, paths, paths, raw, score, sigma, std=std, split=split, group=groups(cfg, paths)
    )
    return attach_lines(table, path, df.index)
