"""Split groups for a personal library: one group per burst, so near-identical frames never straddle splits.

A photographer shoots a burst (or a few near-duplicates of one scene) within seconds, then keeps the best
frame. Those frames look alike, so one in train and its twin in test would leak. The splitter
(`iqs.data.splits`) keeps each `group` in one split; this module forms the groups:

- photos are grouped per folder (an album), in capture-time order;
- a new burst starts where the gap to the previous photo exceeds `burst_gap_s` seconds;
- the capture time is EXIF `DateTimeOriginal` (digiKam's `ImageInformation.creationDate` in the database),
  else the file's modification time. That fallback is declared in the adapters' reports: a copied file
  carries its copy time, which groups photos copied together and separates frames copied apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd

# EXIF (CIPA DC-008) DateTimeOriginal is "YYYY:MM:DD HH:MM:SS"; digiKam's database stores ISO 8601
_FORMATS = ("%Y:%m:%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S")


def parse_capture_time(value: object) -> float | None:
    """Seconds since the epoch (naive local time, as the camera wrote it) or None when unusable."""
    if value is None:
        return None
    text = str(value).strip().rstrip("\x00")
    if not text or text.startswith("0000"):  # cameras without a clock write zeros
        return None
    for fmt in _FORMATS:
        try:
            return datetime.strptime(text[:26], fmt).timestamp()
        except ValueError:
            continue
    return None


def check_gap(burst_gap_s: float) -> float:
    gap = float(burst_gap_s)
    if not np.isfinite(gap) or gap < 0:
        raise ValueError(f"burst_gap_s must be a number of seconds >= 0, got {burst_gap_s!r}")
    return gap


def burst_ids(folders: Sequence[str], times: Sequence[float], burst_gap_s: float) -> np.ndarray:
    """Burst group name per photo: `<folder>@<index of the burst in the folder>`.

    Within a folder, photos sorted by time start a new burst when the gap to the previous photo is more
    than `burst_gap_s` (0 puts every photo with a distinct time in its own group).
    """
    gap = check_gap(burst_gap_s)
    df = pd.DataFrame({"folder": pd.Series(folders, dtype=str), "t": np.asarray(times, dtype=np.float64)})
    if df["t"].isna().any():
        raise ValueError("every photo needs a capture time (EXIF DateTimeOriginal or the file time)")
    df = df.sort_values(["folder", "t"], kind="stable")
    new_folder = df["folder"].ne(df["folder"].shift())
    new_burst = new_folder | (df["t"].diff() > gap)
    index = new_burst.astype(np.int64).groupby(df["folder"]).cumsum() - 1
    out = df["folder"] + "@" + index.astype(str)
    return out.reindex(range(len(df))).to_numpy(dtype=object)
