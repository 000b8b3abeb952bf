"""Split groups for a personal library: one group per burst, so near-identical frames never straddle splits.

A photographer shoots a burst (or a few near-duplicates of one scene) within seconds, then keeps the best
frame. Those frames look alike, so one in train and its twin in test would leak. The splitter
(`iqs.data.splits`) keeps each `group` in one split; this module forms the groups:

- photos are grouped per folder (an album), in capture-time order;
- a new burst starts where the gap to the previous photo exceeds `burst_gap_s` seconds;
- the capture time is EXIF `DateTimeOriginal` (digiKam's `ImageInformation.creationDate` in the database),
  else the file's modification time. That fallback is declared in the adapters' reports: a copied file
  carries its copy time, which groups photos copied together and separates frames copied apart.

`iqs predict --bursts` groups with the same rule (`burst_ids_or_single`), EXIF time only, and keeps the best
frames of each burst (`best_of_bursts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

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


# ---------------------------------------------------------------- best of a burst (`iqs predict --bursts`)


def exif_capture_time(path: str | Path) -> float | None:
    """A photo's EXIF DateTimeOriginal in seconds, None when it has none or exiv2 cannot read the file.

    `iqs predict --bursts` uses no file-time fallback: it rejects photos, and a copied folder's file times
    would join unrelated photos into one burst."""
    import pyexiv2

    try:
        img = pyexiv2.Image(str(path))
    except Exception:  # pyexiv2 raises bare RuntimeError from exiv2: no readable time, so no burst
        return None
    try:
        return parse_capture_time(img.read_exif().get("Exif.Photo.DateTimeOriginal"))
    except Exception:
        return None
    finally:
        img.close()


def burst_ids_or_single(
    paths: Sequence[str], times: Sequence[float | None], burst_gap_s: float
) -> np.ndarray:
    """burst_ids over the photos with a capture time (folder = the path's parent); a photo without one
    is its own burst, named by its path."""
    out = np.asarray([str(p) for p in paths], dtype=object)
    timed = [i for i, t in enumerate(times) if t is not None]
    if timed:
        folders = [str(Path(paths[i]).parent) for i in timed]
        out[timed] = burst_ids(folders, [float(times[i]) for i in timed], burst_gap_s)  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class BurstPick:
    burst: str
    rank: int  # 1 = the best score of its burst
    size: int
    decision: str  # "keep" (top k), "reject" (below the best by more than the margin), "model"


def best_of_bursts(
    bursts: Sequence[str], scores: Sequence[float], top_k: int = 1, margin: float | None = None
) -> list[BurstPick]:
    """Per photo: its burst's rank by score (ties by input order), and the decision: the top `top_k` are
    kept, the others rejected when their score is below the best by more than `margin` (None: never),
    else left to the model. A burst of one photo is left to the model."""
    if int(top_k) < 1:
        raise ValueError(f"burst_top_k must be >= 1, got {top_k}")
    if margin is not None and not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"burst_margin must be a number >= 0 or null, got {margin}")
    df = pd.DataFrame({"burst": list(bursts), "score": np.asarray(scores, dtype=np.float64)})
    df["rank"] = df.groupby("burst")["score"].rank(method="first", ascending=False).astype(int)
    df["size"] = df.groupby("burst")["score"].transform("size").astype(int)
    best = df.groupby("burst")["score"].transform("max")
    out = []
    for row, gap in zip(df.itertuples(index=False), (best - df["score"]).to_numpy(), strict=True):
        if row.size == 1:
            decision = "model"
        elif row.rank <= top_k:
            decision = "keep"
        elif margin is not None and gap > margin:
            decision = "reject"
        else:
            decision = "model"
        out.append(BurstPick(str(row.burst), int(row.rank), int(row.size), decision))
    return out
