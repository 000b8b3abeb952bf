"""`iqs predict`: score photo files and folders, write CSV/JSON, optionally digiKam pick labels in XMP sidecars.

    iqs predict ~/Pictures/2024 --output scores.csv model=exports/run/iqs-1234abcd.full.onnx
    iqs predict photos/ --write-xmp --dry-run model=path/to/best.ckpt      # list the label changes only
    iqs predict a.jpg b.nef --format json --strict model=<mlflow run id>

The model is a `full` ONNX export (onnxruntime), or a checkpoint / MLflow run id exported on the fly. Every
photo is prepared the way digiKam prepares it (see preprocess.py) from a reduced decode (see decode.py).
One pool of worker threads, one per core, each decodes a photo and scores it itself with a single-threaded
onnxruntime run on one shared session (Run is thread-safe and releases the GIL, as libjpeg-turbo, Pillow and
OpenCV do). So every core does whole photos and no thread pool waits on or spins against another; the
benchmark (bench/predict_bench.py) measures this against cores / (decode + model time per photo). Paths are
streamed with a bounded number of photos in flight and rows come out in input order, so memory does not grow
with the folder size. Bad files become error rows; the exit code is 1 only when every file failed (or, with
--strict, when any did).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from iqs.deploy.decode import IMAGE_EXTENSIONS, DecodeError, load_rgb
from iqs.deploy.preprocess import DIGIKAM_SIZE, digikam_chw
from iqs.deploy.xmp import PICK_LABELS, SIDECAR_STYLES, XmpError, apply_change, plan_pick_label

COLUMNS = ["path", "score", "class", "pick_label", "prob_bad", "prob_normal", "prob_good", "error"]


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

    def as_record(self, class_names: list[str]) -> dict[str, Any]:
        ok = self.label is not None
        probs = self.probs or [None, None, None]
        return {
            "path": printable(self.path),
            "score": self.score,
            "class": class_names[self.label] if ok else None,
            "pick_label": PICK_LABELS[self.label] if ok else None,
            "prob_bad": probs[0],
            "prob_normal": probs[1],
            "prob_good": probs[2],
            "error": printable(self.error) if self.error else None,
        }


# ---------------------------------------------------------------- model


class OnnxScorer:
    """A `full` profile export in onnxruntime; (N, 3, 299, 299) [-1, 1] -> score, probs."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        from iqs.deploy.export import read_onnx_meta

        self.path = Path(path)
        self.meta = read_onnx_meta(self.path)
        if self.meta.get("export_profile") != "full":
            raise ValueError(
                f"{self.path}: a '{self.meta.get('export_profile')}' export; `iqs predict` needs the full profile "
                "(it reports the score and the class probabilities)"
            )
        options = ort.SessionOptions()
        # One thread per run by default: `predict_paths` runs the model in every decode worker, so the cores are
        # already busy. Measured on 2 cores, batch 1 also costs the least core time per photo (13 ms against
        # 15-17 ms at batch 4-16, lite0). Spinning threads would only steal time from the decoders.
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.class_names = list(self.meta.get("class_names") or ["bad", "normal", "good"])

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, probs = self.session.run(["score", "probs"], {"input": batch})[:2]
        return score.reshape(-1), probs


def resolve_model(spec: str, tmp_dir: Path, cfg: Any = None) -> Path:
    """A full ONNX as is; a checkpoint, an MLflow run id or a registered model (`models:/<name>@<alias>`,
    `models:/<name>/<version>`) becomes one in `tmp_dir`. The MLflow store is `cfg`'s (iqs.tracking.store)."""
    from iqs.checkpoints import load_checkpoint
    from iqs.config import compose
    from iqs.deploy import export
    from iqs.tracking.model_registry import download_model, find_file, is_model_uri
    from iqs.tracking.store import tracking_uri_for

    def from_checkpoint(path: Path) -> Path:
        model, meta = load_checkpoint(path)
        return export.export_model(model, meta, tmp_dir, path.stem, ["full"], 17, str(path))["full"]

    def store() -> str:
        return tracking_uri_for(cfg if cfg is not None else compose("export", []))

    if is_model_uri(spec):
        folder, _ = download_model(spec, store(), tmp_dir / "registered")
        if any(folder.rglob("*.full.onnx")) or not any(folder.rglob("*.ckpt")):
            return find_file(folder, ".full.onnx", spec)
        return from_checkpoint(find_file(folder, ".ckpt", spec))
    path = Path(spec)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        return path
    if path.suffix == ".ckpt" or path.is_file():
        return from_checkpoint(path)
    export_cfg = compose(
        "export", [f"run_id={spec}", f"out_dir={tmp_dir}", "profiles=[full]", "log_to_run=false"]
    )
    export_cfg.logger.tracking_uri = store()
    return export.export_from_cfg(export_cfg)["full"]


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


@dataclass
class Summary:
    files: int = 0
    scored: int = 0
    errors: Counter = field(default_factory=Counter)
    classes: Counter = field(default_factory=Counter)
    xmp: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    scoring_seconds: float = 0.0  # without loading (or exporting) the model: the rate `make bench` measures

    @property
    def failed(self) -> int:
        return self.files - self.scored + self.xmp["failed"]


def _progress(console: Any) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:6.1f} img/s" if task.speed else "   -- img/s", style="cyan")

    return Progress(
        TextColumn("[bold]scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="iqs predict", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "inputs", nargs="*", help="photo files and folders (recursive); key=value items are overrides"
    )
    p.add_argument("--write-xmp", action="store_true", help="write Xmp.digiKam.PickLabel to XMP sidecars")
    p.add_argument("--sidecar-style", choices=SIDECAR_STYLES, default=None, help="photo.jpg.xmp or photo.xmp")
    p.add_argument("--dry-run", action="store_true", help="list the sidecar changes, write nothing")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any file failed")
    p.add_argument("--output", "-o", default=None, help="out.csv or out.json (default: CSV on stdout)")
    p.add_argument("--format", choices=("csv", "json"), default=None)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads that each decode and score photos (default: CPU count)",
    )
    args = p.parse_intermixed_args(argv)
    overrides = [a for a in args.inputs if "=" in a and not Path(a).exists()]
    args.inputs = [a for a in args.inputs if a not in overrides]
    return args, overrides


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from iqs.config import compose

    args, overrides = _parse_args(list(argv or []))
    cfg = compose("predict", overrides)
    console = Console(stderr=True)
    inputs = args.inputs or list(cfg.inputs or [])
    if not inputs:
        console.print("iqs predict: no input files or folders given")
        return 2
    if not cfg.model:
        console.print("iqs predict: choose a model: model=<full .onnx | .ckpt | MLflow run id>")
        return 2
    write_xmp = args.write_xmp or bool(cfg.write_xmp) or args.dry_run
    dry_run = args.dry_run or bool(cfg.dry_run)
    strict = args.strict or bool(cfg.strict)
    style = args.sidecar_style or str(cfg.sidecar_style)
    workers = args.workers or (int(cfg.workers) if cfg.workers else None)
    output = args.output or cfg.output
    fmt = args.format or cfg.format or (Path(output).suffix.lstrip(".").lower() if output else "csv")
    if fmt not in ("csv", "json"):
        console.print(f"iqs predict: cannot tell the output format of '{output}'; use --format csv|json")
        return 2

    summary = Summary()
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="iqs-predict-"))
        scorer = OnnxScorer(resolve_model(str(cfg.model), Path(tmp), cfg), threads=int(cfg.ort_threads or 1))
        total = sum(1 for _ in iter_image_paths(inputs))
        handle = (
            stack.enter_context(open(output, "w", newline="", encoding="utf-8")) if output else sys.stdout
        )
        writer = RowWriter(handle, fmt, scorer.class_names)
        stack.callback(writer.close)  # a valid CSV/JSON even when interrupted
        rows = predict_paths(
            iter_image_paths(inputs), scorer, workers, int(cfg.decode_min_side), cfg.max_pixels
        )
        with _progress(console) as progress:
            task = progress.add_task("scoring", total=total)
            scoring_start = time.perf_counter()
            for row in rows:
                summary.files += 1
                if row.label is None:
                    summary.errors[row.error_kind] += 1
                else:
                    summary.scored += 1
                    summary.classes[scorer.class_names[row.label]] += 1
                    if write_xmp:
                        _label_sidecar(row, style, dry_run, summary, console)
                writer.write(row)
                progress.advance(task)
            summary.scoring_seconds = time.perf_counter() - scoring_start
    summary.seconds = time.perf_counter() - start
    _print_summary(summary, console, dry_run and write_xmp)
    if summary.files and summary.scored == 0:
        return 1
    return 1 if strict and summary.failed else 0


def _label_sidecar(row: Row, style: str, dry_run: bool, summary: Summary, console: Any) -> None:
    try:
        change = plan_pick_label(row.path, int(row.label), style)
        if not change.changes_anything:
            summary.xmp["unchanged"] += 1
        elif dry_run:
            summary.xmp["would change"] += 1
            console.print(f"[dry-run] {change.describe()}", markup=False, highlight=False, soft_wrap=True)
        elif apply_change(change):
            summary.xmp["written"] += 1
    except (XmpError, OSError) as err:
        summary.xmp["failed"] += 1
        row.error = f"XMP sidecar not written: {err}"


def _print_summary(summary: Summary, console: Any, dry_run: bool) -> None:
    rate = summary.files / summary.scoring_seconds if summary.scoring_seconds else 0.0
    console.print(
        f"{summary.files} files, {summary.scored} scored, {summary.files - summary.scored} failed "
        f"in {summary.seconds:.1f} s (model loaded in {summary.seconds - summary.scoring_seconds:.1f} s, "
        f"then {rate:.1f} files/s)"
    )
    if summary.classes:
        console.print("classes: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.classes.items())))
    if summary.errors:
        console.print("errors: " + ", ".join(f"{k} {v}" for k, v in summary.errors.most_common()))
    if summary.xmp:
        prefix = "XMP (dry run, nothing written): " if dry_run else "XMP: "
        console.print(prefix + ", ".join(f"{k} {v}" for k, v in sorted(summary.xmp.items())))
