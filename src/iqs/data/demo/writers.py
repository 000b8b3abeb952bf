"""Writers for the three demo sources, byte-for-byte in the official files' layouts.

- AVA.txt: space-separated, 15 columns (index, image id, counts of ratings 1..10, two tag ids, challenge id).
- koniq10k_scores_and_distributions.csv: quoted header and names, counts c1..c5, c_total, MOS (1..5),
  SD (sample sd of the votes), MOS_zscore (0..100), numbers to 15 significant digits as in the official file.
- SPAQ_annotations.csv: UTF-8 with a BOM, `Image name,MOS,...`, values to at most 2 decimals ("67", "48.86").
All files use LF line endings, like the official ones.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

AVA_FILE = "AVA.txt"
KONIQ_FILE = "koniq10k_scores_and_distributions.csv"
KONIQ_HEADER = ("image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore")
SPAQ_FILE = "SPAQ_annotations.csv"
SPAQ_HEADER = ("Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")
GROUPS_FILE = "groups.csv"


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG with every encoder option pinned, so the same pixels give the same bytes."""
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        int(quality),
        cv2.IMWRITE_JPEG_OPTIMIZE,
        0,
        cv2.IMWRITE_JPEG_PROGRESSIVE,
        0,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    ]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def _two_decimals(x: float) -> str:
    """SPAQ writes 48.86, 67 and 55.5: at most two decimals, no trailing zeros."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def write_ava(
    path: Path, ids: Sequence[int], counts: np.ndarray, tags: np.ndarray, challenges: Sequence[int]
) -> None:
    lines = []
    for i, (image_id, row, (t1, t2), ch) in enumerate(zip(ids, counts, tags, challenges, strict=True), 1):
        lines.append(" ".join(str(int(v)) for v in (i, image_id, *row, t1, t2, ch)))
    path.write_text("\n".join(lines) + "\n", encoding="ascii", newline="\n")


def _g15(x: float) -> str:
    """R's default output, as in the official KonIQ file: 15 significant digits, no trailing zeros."""
    return f"{x:.15g}"


def write_koniq(
    path: Path,
    names: Sequence[str],
    counts: np.ndarray,
    mos: np.ndarray,
    sd: np.ndarray,
    zscore: np.ndarray,
) -> None:
    lines = [",".join(f'"{h}"' for h in KONIQ_HEADER)]
    for name, c, m, s, z in zip(names, counts, mos, sd, zscore, strict=True):
        cells = [f'"{name}"', *(str(int(v)) for v in c), str(int(c.sum())), _g15(m), _g15(s), _g15(z)]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


def write_spaq(path: Path, names: Sequence[str], mos: np.ndarray, attributes: np.ndarray) -> None:
    lines = [",".join(SPAQ_HEADER)]
    for name, m, attrs in zip(names, mos, attributes, strict=True):
        lines.append(",".join([name, _two_decimals(m), *(_two_decimals(a) for a in attrs)]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig", newline="\n")


def write_groups(path: Path, image_ids: Sequence[str], groups: Sequence[str]) -> None:
    out = io.StringIO(newline="")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("image_id", "group"))
    w.writerows(zip(image_ids, groups, strict=True))
    path.write_text(out.getvalue(), encoding="utf-8", newline="\n")
