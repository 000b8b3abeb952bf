"""Scoring photo files and folders with a model, row by row (the `iqs predict` command line: predict_cli).

The model is a `full` ONNX export (onnxruntime), or a checkpoint / MLflow run id exported on the fly. Every
photo is prepared the way digiKam prepares it (see preprocess.py) from a reduced decode (see decode.py).
One pool of worker threads, one per core, each decodes a photo and scores it itself with a single-threaded
onnxruntime run on one shared session (Run is thread-safe and releases the GIL, as libjpeg-turbo, Pillow and
OpenCV do). So every core does whole photos and no thread pool waits on or spins against another; the
benchmark (bench/predict_bench.py) measures this against cores / (decode + model time per photo). Paths are
streamed with a bounded number of photos in flight and rows come out in input order, so memory does not grow
with the folder size. Bad files become error rows.
"""

from __future__ import annotations

import csv
import json
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from iqs.core.classes import CLASS_NAMES
from iqs.core.decode import IMAGE_EXTENSIONS, DecodeError, load_rgb
from iqs.core.preprocess import DIGIKAM_SIZE, digikam_chw
from iqs.core.xmp import PICK_LABELS

COLUMNS = [
    "path",
    "score",
    "class",
    "pick_label",
    "stars",
    "burst",
    "burst_rank",
    "prob_bad",
    "prob_normal",
    "prob_good",
    "error",
]


def printable(text: str) -> str:
    """`text` as valid UTF-8 for the CSV/JSON output (documented in the README's predict section).

    A file name that is not UTF-8 reaches Python with its bad bytes as lone surrogates (PEP 383), which no
    UTF-8 writer accepts: each such byte is written as the four characters `\\xNN` instead, as `ls -b` shows
    it (the name b"bad\\xffname.jpg" is written bad\\xffname.jpg); UTF-8 names are written unchanged.
    """
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate that no byte produced: escape it as a code point
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


@dataclass
class Row:
    path: str
    score: float | None = None
    label: int | None = None
    probs: list[float] | None = None
    error: str = ""
    error_kind: str = ""
    stars: int | None = None  # 1..5 from the model's rating cuts (None: the model has none)
    burst: str | None = None  # with --bursts: the burst's name and this photo's rank in it (1 = best)
    burst_rank: int | None = None
    pick: int | None = None  # the pick label when --bursts decided it; None: the model's class's

    @property
    def pick_label(self) -> int | None:
        if self.label is None:
            return None
        return self.pick if self.pick is not None else PICK_LABELS[self.label]

    def as_record(self, class_names: list[str]) -> dict[str, Any]:
        ok = self.label is not None
        probs = self.probs or [None, None, None]
        return {
            "path": printable(self.path),
            "score": self.score,
            "class": class_names[self.label] if ok else None,
            "pick_label": self.pick_label,
            "stars": self.stars,
            "burst": printable(self.burst) if self.burst is not None else None,
            "burst_rank": self.burst_rank,
            "prob_bad": probs[0],
            "prob_normal": probs[1],
            "prob_good": probs[2],
            "error": printable(self.error) if self.error else None,
        }


# ---------------------------------------------------------------- model


class OnnxScorer:
    """An export of the profile `iqs predict` reads (profiles.PREDICT: `full`) in onnxruntime;
    (N, 3, 299, 299) [-1, 1] -> score, probs."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        from iqs.core.export_profiles import PREDICT, profile_of_export
        from iqs.deploy.export.exporter import read_onnx_meta

        self.path = Path(path)
        self.meta = read_onnx_meta(self.path)
        read = profile_of_export(self.meta.get("export_profile"))
        if read is None or not read.predict:
            raise ValueError(
                f"{self.path}: a '{self.meta.get('export_profile')}' export; `iqs predict` needs the "
                f"{PREDICT.name} profile (it reports the score and the class probabilities)"
            )
        options = ort.SessionOptions()
        # One thread per run by default: `predict_paths` runs the model in every decode worker, so the cores are
        # already busy. Measured on 2 cores, batch 1 also costs the least core time per photo (13 ms against
        # 15-17 ms at batch 4-16, lite0). Spinning threads would only steal time from the decoders.
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.class_names = list(self.meta.get("class_names") or CLASS_NAMES)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, probs = self.session.run(["score", "probs"], {"input": batch})[:2]
        return score.reshape(-1), probs


def resolve_model(spec: str, tmp_dir: Path, cfg: Any = None) -> Path:
    """A full ONNX as is; a checkpoint, an MLflow run id or a registered model (`models:/<name>@<alias>`,
    `models:/<name>/<version>`) becomes one in `tmp_dir`. The MLflow store is `cfg`'s (iqs.tracking.store)."""
    from iqs.core.config import compose
    from iqs.core.export_profiles import PREDICT
    from iqs.deploy.export import exporter as export
    from iqs.models.checkpoints import load_checkpoint
    from iqs.tracking.model_registry import download_model, find_file, is_model_uri
    from iqs.tracking.store import tracking_uri_for

    def from_checkpoint(path: Path) -> Path:
        model, meta = load_checkpoint(path)
        return export.export_model(model, meta, tmp_dir, path.stem, [PREDICT.name], 17, str(path))[
            PREDICT.name
        ]

    def store() -> str:
        return tracking_uri_for(cfg if cfg is not None else compose("export", []))

    if is_model_uri(spec):
        folder, _ = download_model(spec, store(), tmp_dir / "registered")
        if any(folder.rglob(f"*.{PREDICT.suffix}")) or not any(folder.rglob("*.ckpt")):
            return find_file(folder, f".{PREDICT.suffix}", spec)
        return from_checkpoint(find_file(folder, ".ckpt", spec))
    path = Path(spec)
    if path.suffix == PREDICT.format.extension:
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        return path
    if path.suffix == ".ckpt" or path.is_file():
        return from_checkpoint(path)
    export_cfg = compose(
        "export",
        [f"run_id={spec}", f"out_dir={tmp_dir}", f"profiles=[{PREDICT.name}]", "log_to_run=false"],
    )
    export_cfg.logger.tracking_uri = store()
    return export.export_from_cfg(export_cfg)[PREDICT.name]


# ---------------------------------------------------------------- inputs


def iter_image_paths(
    inputs: Iterable[str | Path], extensions: frozenset[str] = IMAGE_EXTENSIONS
) -> Iterator[Path]:
    """Files as given (any extension: the decoder judges them), folders recursively by extension, sorted."""
    for item in inputs:
        root = Path(item)
        if not root.is_dir():
            yield root
            continue
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                if Path(name).suffix.lower() in extensions and not name.startswith("."):
                    yield Path(folder) / name


def prepare(path: Path, min_side: int, max_pixels: int | None) -> np.ndarray:
    return digikam_chw(load_rgb(path, min_side=min_side, max_pixels=max_pixels))


# ---------------------------------------------------------------- the pipeline


def score_file(path: Path, scorer: OnnxScorer, min_side: int, max_pixels: int | None) -> Row:
    """One photo, decoded and scored in the calling thread; a file that cannot be decoded becomes an error row."""
    try:
        blob = prepare(path, min_side, max_pixels)
    except DecodeError as err:
        return Row(str(path), error=str(err), error_kind=err.kind)
    except Exception as err:  # a decoder bug must not end the run: it becomes this file's error row
        err = DecodeError(path, "error", f"{type(err).__name__}: {err}")
        return Row(str(path), error=str(err), error_kind=err.kind)
    scores, probs = scorer(blob[None])  # model errors are not the photo's fault: they end the run
    return Row(str(path), float(scores[0]), int(np.argmax(probs[0])), [float(p) for p in probs[0]])


def predict_paths(
    paths: Iterable[Path],
    scorer: OnnxScorer,
    workers: int | None = None,
    min_side: int = DIGIKAM_SIZE,
    max_pixels: int | None = None,
) -> Iterator[Row]:
    """Rows in input order; `workers` threads each decode and score whole photos."""
    workers = max(1, workers or os.cpu_count() or 1)
    # Decoded pixels live only inside a running worker (at most `workers` photos); the queue holds paths and
    # finished rows, which are small. Eight per worker lets the others run ahead while one slow file (a huge
    # PNG among JPEGs) holds the head of the queue, whose row must come out first.
    in_flight_limit = 8 * workers
    pending: deque[Future[Row]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="iqs-predict") as pool:
        try:
            for path in paths:
                pending.append(pool.submit(score_file, path, scorer, min_side, max_pixels))
                if len(pending) >= in_flight_limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # interrupted or abandoned: drop the queued photos instead of scoring them on exit
            for future in pending:
                future.cancel()


# ---------------------------------------------------------------- output


class RowWriter:
    """Streams rows as CSV or a JSON array, so nothing accumulates in memory."""

    def __init__(self, handle: IO[str], fmt: str, class_names: list[str]) -> None:
        self.handle, self.fmt, self.class_names, self.count = handle, fmt, class_names, 0
        if fmt == "csv":
            self.csv = csv.DictWriter(handle, fieldnames=COLUMNS)
            self.csv.writeheader()
        elif fmt == "json":
            handle.write("[")
        else:
            raise ValueError(f"unknown output format '{fmt}'; expected csv or json")

    def write(self, row: Row) -> None:
        record = row.as_record(self.class_names)
        if self.fmt == "csv":
            self.csv.writerow({k: "" if v is None else v for k, v in record.items()})
        else:
            self.handle.write(("\n" if self.count == 0 else ",\n") + json.dumps(record, ensure_ascii=False))
        self.count += 1

    def close(self) -> None:
        if self.fmt == "json":
            self.handle.write("\n]\n" if self.count else "]\n")
        self.handle.flush()
