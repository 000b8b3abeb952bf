"""SampleTable: one row per image, the one format every dataset adapter returns (ARCHITECTURE.md, "Add a dataset").

A SampleTable is a pandas DataFrame with the columns below. The 10-bin distribution is stored as
ten float columns `dist_1 .. dist_10` (bins of the common scale) so that 255k-row tables stay
vectorised; `dist_matrix()` gives it back as an (N, 10) array.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from iqs.core.scale import N_BINS

DIST_COLUMNS = [f"dist_{i}" for i in range(1, N_BINS + 1)]
# split values an adapter may return: an official split, "trainval" (official test exists and the
# row is not in it), or None (no official split: seeded split by group later)
SPLITS = ("train", "val", "test")
ADAPTER_SPLITS = (*SPLITS, "trainval", None)
COLUMNS = [
    "dataset",  # source name
    "image_id",  # the dataset's own id, as a string
    "path",  # image path relative to the dataset root (never escaping it)
    "raw_score",  # native scale
    "score",  # common scale [1, 10]
    *DIST_COLUMNS,
    "n_votes",  # float (NaN when unknown)
    "std",  # common-scale standard deviation (NaN when unknown)
    "split",  # see ADAPTER_SPLITS; SPLITS only after the mixture's split step
    "group",  # what must never straddle splits; cross-dataset identity ("ava:953619")
]
# added by the mixture
LABEL_COLUMNS = ["label", "source_weight"]


def make_table(
    dataset: str,
    image_id: pd.Series | np.ndarray | list,
    path: pd.Series | np.ndarray | list,
    raw_score: np.ndarray,
    score: np.ndarray,
    dist: np.ndarray,
    *,
    n_votes: np.ndarray | None = None,
    std: np.ndarray | None = None,
    split: pd.Series | np.ndarray | list | None = None,
    group: pd.Series | np.ndarray | list | None = None,
) -> pd.DataFrame:
    """Assemble a SampleTable from column arrays (all adapters end here)."""
    image_id = pd.Series(np.asarray(image_id)).astype(str).to_numpy()
    n = len(image_id)
    dist = np.asarray(dist, dtype=np.float64).reshape(n, N_BINS)
    df = pd.DataFrame(
        {
            "dataset": dataset,
            "image_id": image_id,
            "path": pd.Series(np.asarray(path)).astype(str).to_numpy(),
            "raw_score": np.asarray(raw_score, dtype=np.float64),
            "score": np.asarray(score, dtype=np.float64),
        }
    )
    df[DIST_COLUMNS] = dist
    df["n_votes"] = np.asarray(n_votes, dtype=np.float64) if n_votes is not None else np.nan
    df["std"] = np.asarray(std, dtype=np.float64) if std is not None else np.nan
    df["split"] = pd.Series(split if split is not None else [None] * n, dtype=object).to_numpy()
    df["group"] = (
        pd.Series(np.asarray(group)).astype(str).to_numpy()
        if group is not None
        else dataset + ":" + df["image_id"]
    )
    return df[COLUMNS]


def dist_matrix(df: pd.DataFrame) -> np.ndarray:
    return df[DIST_COLUMNS].to_numpy(dtype=np.float64)


def validate_table(df: pd.DataFrame) -> None:
    """Structural checks every adapter's output must pass (a bug guard, not user-input validation)."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"SampleTable lacks columns {missing}")
    bad_split = set(df["split"].dropna().unique()) - {s for s in ADAPTER_SPLITS if s}
    if bad_split:
        raise ValueError(f"SampleTable has unknown split values {sorted(bad_split)}")
    if not np.isfinite(df["score"]).all():
        raise ValueError("SampleTable has non-finite scores")
    if ((df["score"] < 1 - 1e-9) | (df["score"] > 10 + 1e-9)).any():
        raise ValueError("SampleTable has scores outside the common scale [1, 10]")
    sums = df[DIST_COLUMNS].sum(axis=1).to_numpy()
    if not np.allclose(sums, 1.0, atol=1e-6):
        raise ValueError("SampleTable distributions do not sum to 1")


def is_safe_relative(path: str) -> bool:
    """True when `path` stays inside its root: relative, no `..` that climbs above it."""
    p = PurePosixPath(path.replace("\\", "/"))
    if p.is_absolute() or (len(path) > 1 and path[1] == ":"):
        return False
    depth = 0
    for part in p.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return True


FINGERPRINT_COLUMNS = ("dataset", "image_id", "path", "score", "label", "split")
IMAGE_COLUMNS = ("dataset", "image_id", "path")


def fingerprint(df: pd.DataFrame, columns: tuple[str, ...] = FINGERPRINT_COLUMNS) -> str:
    """Stable short hash of what a model is trained and judged on (ids, scores, labels, splits)."""
    cols = [c for c in columns if c in df.columns]
    h = pd.util.hash_pandas_object(df[cols].reset_index(drop=True), index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:16]


def images_fingerprint(df: pd.DataFrame) -> str:
    """Hash of which images, in which order, a table holds: what embeddings depend on.

    Labels and splits are left out, so runs that differ only in thresholds or cross-validation fold
    share one feature-cache entry.
    """
    return fingerprint(df, IMAGE_COLUMNS)
