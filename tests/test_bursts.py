"""Burst groups: frames of one burst never straddle train/val/test."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from iqs.data.bursts import burst_ids, parse_capture_time
from iqs.data.demo.library import read_manifest
from iqs.data.mixture import build_mixture

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"


def _reference_bursts(folders, times, gap):
    """Plain loop over each folder's sorted times: the definition, written independently."""
    out = [None] * len(times)
    for folder in sorted(set(folders)):
        idx = sorted((i for i, f in enumerate(folders) if f == folder), key=lambda i: (times[i], i))
        k, last = -1, None
        for i in idx:
            if last is None or times[i] - last > gap:
                k += 1
            out[i] = f"{folder}@{k}"
            last = times[i]
    return out


def test_burst_ids_match_the_definition():
    rng = np.random.default_rng(0)
    folders = list(rng.choice(["a", "a/b", "c d"], 300))
    times = list(np.cumsum(rng.choice([0, 1, 2, 5, 11, 60, 600], 300)).astype(float)[rng.permutation(300)])
    for gap in (0, 2, 10, 100):
        assert list(burst_ids(folders, times, gap)) == _reference_bursts(folders, times, gap)


def test_burst_edges():
    assert list(burst_ids(["x"] * 4, [0, 10, 20.5, 21], 10)) == [
        "x@0",
        "x@0",
        "x@1",
        "x@1",
    ]  # gap == 10 joins
    assert list(burst_ids(["x", "y"], [0, 0], 10)) == ["x@0", "y@0"]  # folders never share a burst
    with pytest.raises(ValueError, match="burst_gap_s"):
        burst_ids(["x"], [0], -1)
    with pytest.raises(ValueError, match="capture time"):
        burst_ids(["x"], [float("nan")], 10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024:05:01 10:00:03", datetime(2024, 5, 1, 10, 0, 3)),
        ("2025-11-09T06:33:10.000", datetime(2025, 11, 9, 6, 33, 10)),  # digiKam's creationDate
        ("2025-11-09T06:33:10", datetime(2025, 11, 9, 6, 33, 10)),
        ("0000:00:00 00:00:00", None),  # a camera without a clock
        ("yesterday", None),
        (None, None),
    ],
)
def test_parse_capture_time(text, expected):
    got = parse_capture_time(text)
    assert got == (expected.timestamp() if expected else None)


def _mixture(root: Path, seed: int, **data):
    ds = OmegaConf.load(CONF / "digikam_xmp.yaml")
    ds.root = str(root)
    cfg = {"name": "personal", "seed": seed, "val_fraction": 0.2, "test_fraction": 0.2, **data,
           "sources": {"digikam_xmp": ds}}  # fmt: skip
    return build_mixture(OmegaConf.create(cfg), {"name": "5_6", "t1": 5.0, "t2": 6.0})


@pytest.mark.slow
def test_no_burst_straddles_splits(library):
    truth = {f["path"]: f["burst"] for f in read_manifest(library)["frames"] if f["cls"] is not None}
    multi = pd.Series(truth).value_counts()
    assert (multi > 1).sum() >= 10  # the library really has bursts to leak
    for seed in range(4):
        t = _mixture(library, seed).table
        t = t.assign(burst=t["path"].map(truth))
        assert t["burst"].notna().all()
        assert t.groupby("burst")["split"].nunique().max() == 1, f"seed {seed}: a burst straddles splits"
        assert set(t["split"]) == {"train", "val", "test"}
        # the adapter's groups are exactly the generator's bursts (shoots are minutes apart, frames seconds)
        assert t.groupby("group")["burst"].nunique().max() == 1
        assert t.groupby("burst")["group"].nunique().max() == 1
    folds = _mixture(library, 0, folds=3, fold=1).table
    folds = folds.assign(burst=folds["path"].map(truth))
    assert folds.groupby("burst")["split"].nunique().max() == 1


def test_gap_zero_separates_frames(library):
    ds = OmegaConf.load(CONF / "digikam_xmp.yaml")
    ds.root, ds.burst_gap_s = str(library), 0
    from iqs.data.adapters import load_source

    t = load_source(ds).table
    assert t["group"].is_unique  # frames 1-3 s apart become groups of their own
