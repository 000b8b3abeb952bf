"""Datasets published as per-image vote histograms (AVA, EVA): statistics, unvoted rows, and the table."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from iqs.core.errors import DataError
from iqs.core.scale import std_to_common, to_common, votes_to_dist
from iqs.data.adapters.reading import (
    QUOTE,
    annotation_files,
    config_key,
    groups,
    image_paths,
    native_range,
    required,
)
from iqs.data.table import make_table

log = logging.getLogger("iqs.data.adapters")


def vote_table(
    cfg: Mapping,
    ids: np.ndarray,
    counts: np.ndarray,
    levels: Sequence[float],
    split: np.ndarray | None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The SampleTable of vote histograms (N, L) over native `levels`: mean score, 10-bin distribution, std.

    Images without a vote are dropped (with a warning) first; also returns the mask of the rows kept, so a
    caller can keep its own per-row data (file lines) in step.
    """
    name = str(cfg["name"])
    lo, hi = native_range(cfg)
    n, mean, std = vote_stats(counts, levels)
    keep = drop_unvoted(n, ids, name, ", ".join(str(p) for p in annotation_files(cfg)))
    ids, counts, n, mean, std = (a[keep] for a in (ids, counts, n, mean, std))
    table = make_table(
        name,
        ids,
        image_paths(cfg, ids, str(required(cfg, "image_ext"))),
        raw_score=mean,
        score=to_common(mean, lo, hi),
        dist=votes_to_dist(counts, levels, lo, hi),
        n_votes=n,
        std=std_to_common(std, lo, hi),
        split=None if split is None else split[keep],
        group=groups(cfg, ids),
    )
    return table, keep


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
