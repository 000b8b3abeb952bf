"""SPAQ (Fang et al., CVPR 2020): 11,125 smartphone photos with a MOS on 0..100 and no vote histograms.

`SPAQ_annotations.csv` (`Image name, MOS, Brightness, ...`, saved with a UTF-8 BOM) ships only the mean,
so the distribution is a discretised Gaussian around the score with a configured `default_std` on the
common scale. There is no official split (split None).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from iqs.data.adapters.base import ADAPTERS
from iqs.data.adapters.reading import (
    attach_lines,
    config_key,
    groups,
    image_paths,
    native_range,
    numeric_column,
    read_table,
    required,
    setting,
    single_annotation_file,
)
from iqs.data.errors import DataError
from iqs.data.scale import gaussian_dist, to_common
from iqs.data.table import make_table


@ADAPTERS.register("spaq")
def load(cfg: Mapping) -> pd.DataFrame:
    name = str(cfg["name"])
    lo, hi = native_range(cfg)
    id_column = str(required(cfg, "id_column"))
    score_column = str(required(cfg, "score_column"))
    default_std = float(required(cfg, "default_std"))
    if not default_std > 0:
        raise DataError(f"{config_key(cfg, 'default_std')} must be > 0, got {default_std}")
    path = single_annotation_file(cfg)

    df = read_table(
        path,
        [id_column, score_column],
        text=[id_column],
        expected=f"the SPAQ annotation CSV with columns '{id_column}', '{score_column}'",
    )
    ids = df[id_column].str.strip()
    empty = (ids.isna() | (ids == "")).to_numpy()
    if empty.any():
        raise DataError(f"empty '{id_column}'", file=path, row=int(df.index[np.flatnonzero(empty)[0]]))
    ids = ids.to_numpy(dtype=str)
    raw = numeric_column(
        df, score_column, path, valid=(lo, hi), range_key=setting(cfg, "native_range", "[lo, hi]")
    )
    score = to_common(raw, lo, hi)
    table = make_table(
        name,
        ids,
        image_paths(cfg, ids),
        raw_score=raw,
        score=score,
        dist=gaussian_dist(score, np.full(len(score), default_std)),
        split=None,
        group=groups(cfg, ids),
    )
    return attach_lines(table, path, df.index)
