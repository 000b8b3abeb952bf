"""`iqs predict`: score photo files and folders, write CSV/JSON, optionally digiKam pick labels and star
ratings in XMP sidecars, optionally keeping the best frame of each burst.

    iqs predict ~/Pictures/2024 --output scores.csv model=exports/run/iqs-1234abcd.full.onnx
    iqs predict photos/ --write-xmp --dry-run model=path/to/best.ckpt      # list the label changes only
    iqs predict photos/ --write-xmp rating model=...                       # Xmp.xmp.Rating 1-5 (or pick, both)
    iqs predict photos/ --bursts --write-xmp --dry-run model=...           # best of each burst accepted
    iqs predict a.jpg b.nef --format json --strict model=<mlflow run id>

Stars come from the model's four rating cuts (learned on validation and baked by training,
iqs.train.decision_cuts) or `rating_cuts=[c1,c2,c3,c4]`. `--bursts` groups photos as the splits do (folder
plus EXIF capture time, `burst_gap_s`; a photo without EXIF time is its own burst), accepts the top
`burst_top_k` of each burst and rejects the others whose score is below the best by more than the model's
`burst_margin` (or the one given); the output names the burst and the rank, `pick_label` the decision.

Options are the keys of conf/predict.yaml (`key=value`); the flags (iqs.core.config.ALIASES) are aliases of some of them,
and bare words are the `inputs`. The scoring itself is iqs.deploy.predict.scorer. The exit code is 1 only when
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

from iqs.core.config import CommandLineError, compose
from iqs.core.export_profiles import PREDICT
from iqs.core.xmp import (
    PICK_LABELS,
    SIDECAR_STYLES,
    WRITE_MODES,
    XmpChange,
    XmpError,
    apply_change,
    plan_pick_label,
    plan_rating,
)
from iqs.data.bursts import check_gap
from iqs.deploy.predict.scorer import (
    OnnxScorer,
    Row,
    RowWriter,
    iter_image_paths,
    predict_paths,
    resolve_model,
)


@dataclass
class Summary:
    files: int = 0
    scored: int = 0
    errors: Counter = field(default_factory=Counter)
    classes: Counter = field(default_factory=Counter)
    xmp: Counter = field(default_factory=Counter)
    bursts: Counter = field(default_factory=Counter)
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


class PredictError(ValueError):
    """A setting that cannot work with this model (no rating cuts, say); the message says what to do."""


def write_mode(cfg: Any) -> str | None:
    """What --write-xmp writes: None (nothing), pick, rating or both; `true` is pick."""
    value = cfg.write_xmp
    if value is None or value is False or str(value).lower() in ("false", "none", "no", "0"):
        return None
    if value is True or str(value).lower() in ("true", "yes", "1"):
        return "pick"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    try:
        cfg = compose("predict", list(argv or []))
    except CommandLineError:
        raise  # iqs.cli prints it with the way to --help
    except ValueError as exc:
        console.print(f"iqs predict: {exc}", markup=False, soft_wrap=True)
        return 2
    problem = _problem(cfg)
    if problem:
        console.print(f"iqs predict: {problem}", markup=False, soft_wrap=True)
        return 2
    try:
        summary = _score(cfg, console)
    except PredictError as exc:
        console.print(f"iqs predict: {exc}", markup=False, soft_wrap=True)
        return 2
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
    if (
        Path(str(cfg.model)).suffix in (PREDICT.format.extension, ".ckpt")
        and not Path(str(cfg.model)).is_file()
    ):
        return f"model file not found: {cfg.model} (model=<full .onnx | .ckpt | MLflow run id>)"
    if str(cfg.sidecar_style) not in SIDECAR_STYLES:
        return f"sidecar_style must be one of {', '.join(SIDECAR_STYLES)}, got '{cfg.sidecar_style}'"
    if _output_format(cfg) not in ("csv", "json"):
        return f"cannot tell the output format of '{cfg.output}'; use --format csv|json"
    mode = write_mode(cfg)
    if mode is not None and mode not in WRITE_MODES:
        return f"--write-xmp writes one of {', '.join(WRITE_MODES)}, got '{cfg.write_xmp}'"
    cuts = cfg.get("rating_cuts")
    if cuts is not None and (len(cuts) != 4 or list(cuts) != sorted(float(c) for c in cuts)):
        return f"rating_cuts needs 4 non-decreasing scores (stars 1|2|3|4|5), got {list(cuts)}"
    top_k = cfg.get("burst_top_k")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        return f"burst_top_k must be an integer >= 1, got {top_k}"
    margin = cfg.get("burst_margin")
    if margin is not None and (isinstance(margin, (bool, str)) or not float(margin) >= 0):
        return f"burst_margin must be a score difference >= 0 (or null: the model's), got {margin}"
    try:
        check_gap(cfg.burst_gap_s)
    except ValueError as exc:
        return str(exc)
    return None


def _culling(cfg: Any, meta: dict[str, Any], mode: str | None) -> tuple[list[float] | None, float | None]:
    """(rating cuts, burst margin): those given, else the model's own (iqs.train.decision_cuts)."""
    cuts = cfg.get("rating_cuts")
    cuts = [float(c) for c in cuts] if cuts is not None else meta.get("rating_cuts")
    if mode in ("rating", "both") and cuts is None:
        raise PredictError(
            "this model carries no star-rating cuts (trained before they existed, or without "
            "decision_cuts.bake=true); give rating_cuts=[c1,c2,c3,c4] on its score scale, or retrain with "
            "decision_cuts.bake=true and export again"
        )
    margin = cfg.get("burst_margin")
    return cuts, float(margin) if margin is not None else meta.get("burst_margin")


def _score(cfg: Any, console: Any) -> Summary:
    """Score every photo of `cfg.inputs` into the output, labelling sidecars when asked; the counts."""
    inputs = list(cfg.inputs)
    dry_run = bool(cfg.dry_run)
    mode = write_mode(cfg) or ("pick" if dry_run else None)  # a dry run lists the sidecar changes
    write_xmp = mode is not None
    summary = Summary()
    if write_xmp:  # the XMP line always shows these counts, zeros included
        first = "would change" if dry_run else "written"
        kept = [XMP_KEPT] * (mode in ("pick", "both")) + [XMP_KEPT_RATING] * (mode in ("rating", "both"))
        summary.xmp.update(dict.fromkeys((first, *kept, "failed"), 0))
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="iqs-predict-"))
        scorer = OnnxScorer(resolve_model(str(cfg.model), Path(tmp), cfg), threads=int(cfg.ort_threads or 1))
        cuts, margin = _culling(cfg, scorer.meta, mode)
        if cfg.bursts and margin is None:
            console.print(
                "note: no burst margin (the model has none, burst_margin=null): the best of each burst is "
                "accepted and the others keep the model's label; burst_margin=<score gap> rejects them",
                markup=False,
                soft_wrap=True,
            )
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
        held: list[Row] = []  # --bursts: every row, decided once all are scored

        def finish(row: Row) -> None:
            if row.label is not None and write_xmp:
                _label_sidecar(
                    row, str(cfg.sidecar_style), dry_run, summary, console, bool(cfg.overwrite), mode
                )
            writer.write(row)

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
                    if cuts is not None:
                        row.stars = _stars(row.score, cuts)
                if cfg.bursts:
                    held.append(row)
                else:
                    finish(row)
                progress.advance(task)
            if cfg.bursts:
                _decide_bursts(held, cfg, margin, summary)
                for row in held:
                    finish(row)
            summary.scoring_seconds = time.perf_counter() - scoring_start
    summary.seconds = time.perf_counter() - start
    return summary


def _stars(score: float | None, cuts: list[float]) -> int | None:
    from iqs.metrics.label_rule import stars_for

    return None if score is None else int(stars_for([score], cuts)[0])


def _decide_bursts(rows: list[Row], cfg: Any, margin: float | None, summary: Summary) -> None:
    """Name each scored row's burst and rank; the top k are accepted, the clearly worse rejected."""
    from iqs.data.bursts import best_of_bursts, burst_ids_or_single, exif_capture_time

    scored = [r for r in rows if r.label is not None]
    if not scored:
        return
    times = [exif_capture_time(r.path) for r in scored]
    names = burst_ids_or_single([r.path for r in scored], times, float(cfg.burst_gap_s))
    picks = best_of_bursts(names, [float(r.score) for r in scored], int(cfg.burst_top_k), margin)
    for row, pick in zip(scored, picks, strict=True):
        row.burst, row.burst_rank = pick.burst, pick.rank
        if pick.decision == "keep":
            row.pick = PICK_LABELS[2]
        elif pick.decision == "reject":
            row.pick = PICK_LABELS[0]
        summary.bursts[pick.decision] += 1
    summary.bursts["bursts"] = len(set(names))
    summary.bursts["without EXIF time"] = sum(t is None for t in times)


# summary keys of the XMP line (`XMP: written 3, left alone (user label) 2, ...`)
XMP_KEPT = "left alone (user label)"
XMP_KEPT_RATING = "left alone (user rating)"
XMP_REPLACED = "replaced user label"


def _label_sidecar(
    row: Row,
    style: str,
    dry_run: bool,
    summary: Summary,
    console: Any,
    overwrite: bool = False,
    mode: str | None = "pick",
) -> None:
    """Write (or, dry, list) one photo's pick label and/or stars; a label or rating the user set is kept
    unless `overwrite`."""
    try:
        changes: list[XmpChange] = []
        if mode in ("pick", "both"):
            model_class = next(c for c, pick in PICK_LABELS.items() if pick == row.pick_label)
            changes.append(plan_pick_label(row.path, model_class, style, overwrite=overwrite))
        if mode in ("rating", "both") and row.stars is not None:
            changes.append(plan_rating(row.path, int(row.stars), style, overwrite=overwrite))
        for change in changes:
            _apply(change, dry_run, summary, console)
    except (XmpError, OSError) as err:
        summary.xmp["failed"] += 1
        row.error = f"XMP sidecar not written: {err}"


def _apply(change: XmpChange, dry_run: bool, summary: Summary, console: Any) -> None:
    if change.keeps_user_label:
        summary.xmp[XMP_KEPT if change.prop.name == "PickLabel" else XMP_KEPT_RATING] += 1
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


def _print_summary(summary: Summary, console: Any, dry_run: bool) -> None:
    rate = summary.files / summary.scoring_seconds if summary.scoring_seconds else 0.0
    console.print(
        f"{summary.files} files, {summary.scored} scored, {summary.files - summary.scored} failed "
        f"in {summary.seconds:.1f} s (model loaded in {summary.seconds - summary.scoring_seconds:.1f} s, "
        f"then {rate:.1f} files/s)"
    )
    if summary.classes:
        console.print("classes: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.classes.items())))
    if summary.bursts:
        console.print("bursts: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.bursts.items())))
    if summary.errors:
        console.print("errors: " + ", ".join(f"{k} {v}" for k, v in summary.errors.most_common()))
    if summary.xmp:
        prefix = "XMP (dry run, nothing written): " if dry_run else "XMP: "
        console.print(prefix + ", ".join(f"{k} {v}" for k, v in sorted(summary.xmp.items())))
