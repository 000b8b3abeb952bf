"""`iqs predict`: score photo files and folders, write CSV/JSON, optionally digiKam pick labels in XMP sidecars.

    iqs predict ~/Pictures/2024 --output scores.csv model=exports/run/iqs-1234abcd.full.onnx
    iqs predict photos/ --write-xmp --dry-run model=path/to/best.ckpt      # list the label changes only
    iqs predict a.jpg b.nef --format json --strict model=<mlflow run id>

Options are the keys of conf/predict.yaml (`key=value`); the flags in FLAGS are aliases of some of them,
and bare words are the `inputs`. The scoring itself is iqs.deploy.predict. The exit code is 1 only when
every file failed (or, with --strict / strict=true, when any did).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iqs.config import Flags, compose
from iqs.deploy.predict import OnnxScorer, Row, RowWriter, iter_image_paths, predict_paths, resolve_model
from iqs.deploy.xmp import SIDECAR_STYLES, XmpError, apply_change, plan_pick_label

# the flags users expect, each an alias of one conf/predict.yaml key (`--dry-run` is `dry_run=true`)
FLAGS = Flags(
    switches={
        "--write-xmp": "write_xmp",
        "--dry-run": "dry_run",
        "--overwrite": "overwrite",
        "--strict": "strict",
    },
    options={
        "-o": "output",
        "--output": "output",
        "--format": "format",
        "--workers": "workers",
        "--sidecar-style": "sidecar_style",
    },
    positional="inputs",
    # paths as typed: `model=/tmp/rv (1)/m.onnx`, `output=a,b.csv` (Hydra reads ( and , as grammar)
    strings=("model", "output", "inputs", "paths."),
)


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


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    try:
        cfg = compose("predict", list(sys.argv[1:] if argv is None else argv), FLAGS)
    except ValueError as exc:
        console.print(f"iqs predict: {exc}", markup=False, soft_wrap=True)
        return 2
    problem = _problem(cfg)
    if problem:
        console.print(f"iqs predict: {problem}", markup=False, soft_wrap=True)
        return 2
    summary = _score(cfg, console)
    _print_summary(summary, console, bool(cfg.dry_run))
    if summary.files and summary.scored == 0:
        return 1
    return 1 if cfg.strict and summary.failed else 0


def _output_format(cfg: Any) -> str:
    return cfg.format or (Path(cfg.output).suffix.lstrip(".").lower() if cfg.output else "csv")


def _problem(cfg: Any) -> str | None:
    """What is wrong with the composed options, said so that the user knows what to do; None: fine."""
    if not cfg.inputs:
        return "no input files or folders given"
    if not cfg.model:
        return "choose a model: model=<full .onnx | .ckpt | MLflow run id>"
    if Path(str(cfg.model)).suffix in (".onnx", ".ckpt") and not Path(str(cfg.model)).is_file():
        return f"model file not found: {cfg.model} (model=<full .onnx | .ckpt | MLflow run id>)"
    if str(cfg.sidecar_style) not in SIDECAR_STYLES:
        return f"sidecar_style must be one of {', '.join(SIDECAR_STYLES)}, got '{cfg.sidecar_style}'"
    if _output_format(cfg) not in ("csv", "json"):
        return f"cannot tell the output format of '{cfg.output}'; use --format csv|json"
    return None


def _score(cfg: Any, console: Any) -> Summary:
    """Score every photo of `cfg.inputs` into the output, labelling sidecars when asked; the counts."""
    inputs = list(cfg.inputs)
    dry_run = bool(cfg.dry_run)
    write_xmp = bool(cfg.write_xmp) or dry_run  # a dry run lists the sidecar changes
    summary = Summary()
    if write_xmp:  # the XMP line always shows these counts, zeros included
        first = "would change" if dry_run else "written"
        summary.xmp.update(dict.fromkeys((first, XMP_KEPT, "failed"), 0))
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="iqs-predict-"))
        scorer = OnnxScorer(resolve_model(str(cfg.model), Path(tmp), cfg), threads=int(cfg.ort_threads or 1))
        total = sum(1 for _ in iter_image_paths(inputs))
        output = cfg.output
        handle = (
            stack.enter_context(open(output, "w", newline="", encoding="utf-8")) if output else sys.stdout
        )
        writer = RowWriter(handle, _output_format(cfg), scorer.class_names)
        stack.callback(writer.close)  # a valid CSV/JSON even when interrupted
        workers = int(cfg.workers) if cfg.workers else None
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
                        _label_sidecar(
                            row, str(cfg.sidecar_style), dry_run, summary, console, bool(cfg.overwrite)
                        )
                writer.write(row)
                progress.advance(task)
            summary.scoring_seconds = time.perf_counter() - scoring_start
    summary.seconds = time.perf_counter() - start
    return summary


# summary keys of the XMP line (`XMP: written 3, left alone (user label) 2, ...`)
XMP_KEPT = "left alone (user label)"
XMP_REPLACED = "replaced user label"


def _label_sidecar(
    row: Row, style: str, dry_run: bool, summary: Summary, console: Any, overwrite: bool = False
) -> None:
    """Write (or, dry, list) one photo's pick label; a label the user set is kept unless `overwrite`."""
    try:
        change = plan_pick_label(row.path, int(row.label), style, overwrite=overwrite)
        if change.keeps_user_label:
            summary.xmp[XMP_KEPT] += 1
            if dry_run:
                console.print(f"[dry-run] {change.describe()}", markup=False, highlight=False, soft_wrap=True)
        elif not change.changes_anything:
            summary.xmp["unchanged"] += 1
        elif dry_run:
            summary.xmp["would change"] += 1
            console.print(f"[dry-run] {change.describe()}", markup=False, highlight=False, soft_wrap=True)
        elif apply_change(change):
            summary.xmp["written"] += 1
            if change.user_label is not None:
                summary.xmp[XMP_REPLACED] += 1
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
