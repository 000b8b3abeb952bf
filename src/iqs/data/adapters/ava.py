"""AVA (Murray et al., CVPR 2012): 255k photos, 78-549 votes each on 1..10.

Reads the official AVA.txt (15 space-separated columns: index, image id, counts of ratings 1..10, two tag
ids, challenge id) or the common vote-count CSV variant (`image_id, score2..score11`, named after
AVA.txt's column numbers). The format is told by content, not by file name. The official generic test
list marks rows "test"; the rest are "trainval" (val is carved out of it later, by group).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from iqs.core.errors import DataError
from iqs.data.adapters.base import ADAPTERS
from iqs.data.adapters.reading import (
    attach_lines,
    numeric_column,
    optional_file,
    read_id_list,
    read_table,
    single_annotation_file,
    sniff,
    stated,
)
from iqs.data.adapters.votes import check_levels, vote_table

LEVELS = np.arange(1, 11, dtype=np.float64)
RATING_COLUMNS = [f"rating_{k}" for k in range(1, 11)]
TXT_COLUMNS = ["index", "image_id", *RATING_COLUMNS, "tag_1", "tag_2", "challenge"]
CSV_COUNT_COLUMNS = [f"score{k}" for k in range(2, 12)]
TXT_EXPECTED = (
    "AVA.txt: 15 space-separated integers per line (index, image id, 10 vote counts, 2 tags, challenge)"
)
CSV_EXPECTED = "an AVA vote CSV with columns image_id, score2..score11"


def read_votes(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image ids as str, (N, 10) vote counts for ratings 1..10, file line numbers) from either format."""
    text = sniff(path, f"{TXT_EXPECTED}, or {CSV_EXPECTED}")
    first = next(line for line in text.splitlines() if line.strip())
    if "," in first and "image_id" in first:
        return _read_vote_csv(path)
    tokens = first.split()
    if len(tokens) == len(TXT_COLUMNS) and all(t.lstrip("-").isdigit() for t in tokens):
        return _read_ava_txt(path)
    raise DataError(
        f"does not look like an AVA annotation file; expected {TXT_EXPECTED}, or {CSV_EXPECTED}. "
        f"First line: {first[:120]!r}",
        file=path,
        row=1,
    )


def _read_ava_txt(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        df = pd.read_csv(path, sep=r"\s+", header=None, names=TXT_COLUMNS, skip_blank_lines=False)
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"cannot parse as {TXT_EXPECTED}: {exc}", file=path) from None
    df.index = np.arange(1, len(df) + 1)  # no header: line numbers start at 1
    df = df[~df.isna().all(axis=1)]
    needed = ["image_id", *RATING_COLUMNS]
    if all(pd.api.types.is_integer_dtype(df[c]) for c in needed) and (df[RATING_COLUMNS] >= 0).all().all():
        counts = df[RATING_COLUMNS].to_numpy(dtype=np.float64)  # fast path: a clean file
    else:
        numeric_column(df, "image_id", path, integer=True)
        counts = np.stack(
            [numeric_column(df, c, path, valid=(0, np.inf), integer=True) for c in RATING_COLUMNS], axis=1
        )
    ids = df["image_id"].astype(np.int64).astype(str).to_numpy()
    return ids, counts, df.index.to_numpy()


def _read_vote_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    df = read_table(path, ["image_id", *CSV_COUNT_COLUMNS], text=["image_id"], expected=CSV_EXPECTED)
    counts = np.stack(
        [numeric_column(df, c, path, valid=(0, np.inf), integer=True) for c in CSV_COUNT_COLUMNS], axis=1
    )
    ids = df["image_id"].str.strip()
    empty = ids.isna() | (ids == "")
    if empty.any():
        raise DataError("empty image_id", file=path, row=int(df.index[np.flatnonzero(empty.to_numpy())[0]]))
    return ids.to_numpy(dtype=str), counts, df.index.to_numpy()


@ADAPTERS.register("ava")
def load(cfg: Mapping) -> pd.DataFrame:
    check_levels(cfg, LEVELS, "AVA's ratings")
    path = single_annotation_file(cfg)
    ids, counts, lines = read_votes(path)

    split = None
    stated(cfg, "test_list")  # conf/dataset/ava.yaml names the official list; null = no official split
    test_list = optional_file(cfg, "test_list")
    if test_list is not None:
        test_ids = read_id_list(test_list)
        split = np.where(pd.Series(ids).isin(test_ids).to_numpy(), "test", "trainval").astype(object)
    table, keep = vote_table(cfg, ids, counts, LEVELS, split)
    return attach_lines(table, path, lines[keep])
