"""EVA (Kang et al., ATQAM 2020): 4,070 AVA photos re-rated on 0..10, one row per vote.

Reads `votes_filtered.csv` ('='-delimited, `image_id=user_id=score=...`) and aggregates the votes of each
image into an 11-level histogram. It also reads per-image histogram JSONs (`[{image_id, label: counts of
scores 1..10, score}]`, the format of older NIMA-style training scripts). With several files the
histograms are summed per image, so an image split across files appears once with all its votes. EVA has
no official split (split None); its images are AVA images, hence group `ava:<id>` so that the mixture
never puts the same photo on both sides of a split.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from iqs.core.errors import DataError
from iqs.data.adapters.base import ADAPTERS
from iqs.data.adapters.reading import (
    annotation_files,
    native_range,
    numeric_column,
    read_table,
    sniff,
)
from iqs.data.adapters.votes import check_levels, vote_stats, vote_table

VOTES_EXPECTED = "EVA's votes_filtered.csv: '='-delimited with columns image_id=user_id=score=..."
JSON_EXPECTED = "a JSON list of {image_id, label: 10 vote counts for scores 1..10, score}"
JSON_LEVELS = np.arange(1, 11)
# relative tolerance between a JSON entry's `score` and the mean of its counts (they are written as floats)
SCORE_RTOL = 1e-6


def read_vote_rows(path: Path, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """One row per vote -> (image ids, (N, L) counts over the integer levels lo..hi)."""
    df = read_table(path, ["image_id", "score"], sep="=", text=["image_id"], expected=VOTES_EXPECTED)
    score = numeric_column(
        df,
        "score",
        path,
        valid=(lo, hi),
        integer=True,
        range_key="native_range=[lo, hi] in the dataset config",
    )
    ids = df["image_id"].str.strip()
    empty = (ids.isna() | (ids == "")).to_numpy()
    if empty.any():
        raise DataError("empty image_id", file=path, row=int(df.index[np.flatnonzero(empty)[0]]))
    codes, uniques = pd.factorize(ids, sort=False)
    n_levels = int(hi - lo) + 1
    flat = codes * n_levels + (score - lo).astype(np.int64)
    counts = np.bincount(flat, minlength=len(uniques) * n_levels).reshape(len(uniques), n_levels)
    return np.asarray(uniques, dtype=str), counts.astype(np.float64)


def read_histogram_json(path: Path, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-image histograms of scores 1..10 -> (ids, (N, L) counts over lo..hi), each entry checked."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"invalid JSON ({exc}); expected {JSON_EXPECTED}", file=path) from None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"expected {JSON_EXPECTED}, got {type(entries).__name__} with no entries", file=path)
    try:
        df = pd.DataFrame.from_records(entries)
    except (TypeError, ValueError) as exc:
        raise DataError(f"expected {JSON_EXPECTED}: {exc}", file=path) from None
    missing = [c for c in ("image_id", "label") if c not in df.columns]
    if missing:
        raise DataError(
            f"entries lack {missing}; expected {JSON_EXPECTED}, found keys {list(df.columns)[:10]}", file=path
        )
    df.index = np.arange(1, len(df) + 1)  # "row" = 1-based entry number
    lengths = df["label"].map(lambda v: len(v) if isinstance(v, list) else -1).to_numpy()
    bad = np.flatnonzero(lengths != len(JSON_LEVELS))
    if len(bad):
        raise DataError(
            f"entry 'label' must be a list of {len(JSON_LEVELS)} counts (scores 1..10), "
            f"got {df['label'].iloc[bad[0]]!r} ({len(bad)} such entries)",
            file=path,
            row=int(df.index[bad[0]]),
        )
    labels = pd.DataFrame(df["label"].tolist(), index=df.index, columns=[f"count_{k}" for k in JSON_LEVELS])
    hist = np.stack(
        [numeric_column(labels, c, path, valid=(0, np.inf), integer=True) for c in labels.columns], axis=1
    )
    if "score" in df.columns:
        score = numeric_column(df, "score", path, allow_missing=True)
        _, mean, _ = vote_stats(hist, JSON_LEVELS)
        off = np.isfinite(score) & np.isfinite(mean) & ~np.isclose(score, mean, rtol=SCORE_RTOL, atol=1e-9)
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise DataError(
                f"'score' {score[i]:g} is not the mean {mean[i]:g} of its vote counts {hist[i].astype(int).tolist()} "
                f"({int(off.sum())} such entries): the file is inconsistent",
                file=path,
                row=int(df.index[i]),
            )
    counts = np.zeros((len(df), int(hi - lo) + 1))
    counts[:, (JSON_LEVELS - lo).astype(int)] = hist
    ids = df["image_id"].astype(str).str.strip().to_numpy(dtype=str)
    return ids, counts


@ADAPTERS.register("eva")
def load(cfg: Mapping) -> pd.DataFrame:
    lo, hi = native_range(cfg)
    if lo != int(lo) or hi != int(hi):
        raise DataError(f"EVA votes are integers: native_range must have integer ends, got [{lo:g}, {hi:g}]")
    check_levels(cfg, JSON_LEVELS.tolist(), "the JSON histograms' scores")
    levels = np.arange(lo, hi + 1)

    parts = []
    for path in annotation_files(cfg):
        head = sniff(path, f"{VOTES_EXPECTED}, or {JSON_EXPECTED}").lstrip()
        reader = read_histogram_json if head.startswith(("[", "{")) else read_vote_rows
        ids, counts = reader(path, lo, hi)
        parts.append(pd.DataFrame(counts, index=pd.Index(ids, name="image_id")))
    # an image may be in several files (e.g. a split made on vote rows): its votes add up
    merged = pd.concat(parts).groupby(level=0, sort=False).sum()
    ids = merged.index.to_numpy(dtype=str)
    counts = merged.to_numpy(dtype=np.float64)

    return vote_table(cfg, ids, counts, levels, None)[0]
