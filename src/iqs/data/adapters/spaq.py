"""SPAQ (Fang et al., CVPR 2020): 11,125 smartphone photos with a MOS on 0..100 and no vote histograms.

`SPAQ_annotations.csv` (`Image name, MOS, Brightness, ...`, saved with a UTF-8 BOM) ships only the mean,
so the distribution is a discretised Gaussian around the score with a configured `default_std` on the
common scale. There is no official split (split None).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from iqs.data.adapters.base import ADAPTERS
from iqs.data.adapters.columns import gaussian_table, mean_only_settings, native_scores, text_ids
from iqs.data.adapters.reading import attach_lines, groups, image_paths, read_table, required


@ADAPTERS.register("spaq")
def load(cfg: Mapping) -> pd.DataFrame:
    name, lo, hi, default_std, path = mean_only_settings(cfg)
    id_column = str(required(cfg, "id_column"))
    score_column = str(required(cfg, "score_column"))

    df = read_table(
        path,
        [id_column, score_column],
        text=[id_column],
        expected=f"the SPAQ annotation CSV with columns '{id_column}', '{score_column}'",
    )
    ids = text_ids(df, id_column, path, f"'{id_column}'").to_numpy(dtype=str)
    raw, score = native_scores(df, score_column, path, cfg, lo, hi)
    table = gaussian_table(name, ids, image_paths(cfg, ids), raw, score, default_std, group=groups(cfg, ids))
    return attach_lines(table, path, df.index)
