"""Parsing speed of the AVA and EVA adapters at full dataset size (a benchmark, not a test).

Writes 255,000 AVA.txt rows and 137,000 EVA vote rows with realistic values, then times `load_source`
on each (image check off: only annotation parsing and aggregation are measured).

    .venv/bin/python bench/parse_annotations.py [tmp_dir]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from iqs.data.adapters import load_source

N_AVA = 255_000
N_EVA_VOTES = 137_000
N_EVA_IMAGES = 4_070


def write_ava_txt(path: Path, rng: np.random.Generator) -> None:
    ids = rng.choice(np.arange(1, 1_000_000), size=N_AVA, replace=False)
    # votes: 78-549 per image around a per-image mean, as in AVA
    n = rng.integers(78, 550, size=N_AVA)
    mean = np.clip(rng.normal(5.4, 0.75, size=N_AVA), 1.5, 9.5)
    p = np.exp(-0.5 * ((np.arange(1, 11)[None, :] - mean[:, None]) / 1.4) ** 2)
    counts = rng.multinomial(n, p / p.sum(axis=1, keepdims=True))
    tags = rng.integers(0, 67, size=(N_AVA, 2))
    challenge = rng.integers(1, 1400, size=N_AVA)
    table = np.column_stack([np.arange(1, N_AVA + 1), ids, counts, tags, challenge])
    np.savetxt(path, table, fmt="%d", delimiter=" ")


def write_eva_votes(path: Path, rng: np.random.Generator) -> None:
    ids = rng.choice(np.arange(1, 1_000_000), size=N_EVA_IMAGES, replace=False)
    image = rng.choice(ids, size=N_EVA_VOTES)
    score = np.clip(np.rint(rng.normal(6.2, 1.6, size=N_EVA_VOTES)), 0, 10).astype(int)
    votes = pd.DataFrame(
        {
            "image_id": image,
            "user_id": rng.integers(1, 1500, size=N_EVA_VOTES),
            "score": score,
            "difficulty": rng.integers(1, 5, size=N_EVA_VOTES),
            "visual": rng.integers(1, 5, size=N_EVA_VOTES),
            "composition": rng.integers(1, 5, size=N_EVA_VOTES),
            "quality": rng.integers(1, 5, size=N_EVA_VOTES),
            "semantic": rng.integers(1, 5, size=N_EVA_VOTES),
            "vote_time": rng.integers(1, 200, size=N_EVA_VOTES),
        }
    )
    votes.to_csv(path, sep="=", index=False)


def _timed(cfg: dict) -> tuple[float, int]:
    start = time.perf_counter()
    table = load_source(cfg).table
    return time.perf_counter() - start, len(table)


def run(tmp_dir: str | Path) -> dict:
    tmp = Path(tmp_dir)
    rng = np.random.default_rng(0)
    write_ava_txt(tmp / "AVA.txt", rng)
    write_eva_votes(tmp / "votes_filtered.csv", rng)
    common = {"root": str(tmp), "images": "images", "check_images": False, "group_file": None}
    ava_s, ava_n = _timed(
        {
            **common,
            "name": "ava",
            "adapter": "ava",
            "annotations": "AVA.txt",
            "native_range": [1, 10],
            "test_list": None,
        }
    )
    eva_s, eva_n = _timed(
        {
            **common,
            "name": "eva",
            "adapter": "eva",
            "annotations": "votes_filtered.csv",
            "native_range": [0, 10],
        }
    )
    assert ava_n == N_AVA and eva_n == N_EVA_IMAGES
    return {"ava_parse_seconds": round(ava_s, 3), "eva_votes_seconds": round(eva_s, 3)}


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(run(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as d:
            print(run(d))
