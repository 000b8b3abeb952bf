"""`iqs compare`: tracked runs side by side. Options and defaults: conf/compare.yaml.

- `view=metric` (the default): one metric (`metric=srcc`), a row per run and a column per dataset
  (`all` first), each cell the test value with its 95% CI and test groups, `0.794 [0.75, 0.83] n=15`
  (what the run logged as `test/<ds>/<metric>_lo|_hi`, `n_groups`); with fewer groups than
  iqs.metrics.interval_rule allows, `0.688 n=3: no CI` and a note saying why. Only the axes and params
  that vary are shown, so the table fits an 80-100 column terminal.
- `view=wide`: every metric in `metrics=` for every dataset, one column each, with every axis and
  every varying param.
- `baseline=<run id, its first 8 characters, or run name>`: each other selected run against that one
  on the same test images. Per dataset: the baseline's value, the run's, and the difference with its
  paired CI, p-value and test groups, from the runs' `predictions/test_predictions.csv` (the same
  rule: no CI and no p below the minimum). Runs tested on other images are refused.
- Labels: runs whose labels differ (the `labels` tag: the threshold pair and any source's own pair)
  are listed in separate groups. Accuracy and F1 depend on the labels and are not comparable across
  groups; PLCC, SRCC, KRCC and RMSE are.
- `format=html` or `png` draws the values (or differences) with their CI bars per dataset into a file
  (`output=`, default `compare-<metric>.<format>`); with `sweep=` it is also logged into each run of the
  sweep under `compare/`.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from iqs.core.config import CommandLineError, compose
from iqs.report.compare_paired import paired_table
from iqs.report.compare_render import WIDE, fit_width, render, rich_table, title_for, write_figure
from iqs.report.compare_table import (
    AXES,
    CompareError,
    build_table,
    labels_of,
    newest_group,
    varying_params,
)
from iqs.tracking.liveness import mark_dead_runs_in
from iqs.tracking.store import tracking_uri_for

__all__ = [  # the entry points; the table, pairing and rendering live in compare_table/_paired/_render
    "AXES",
    "CompareError",
    "build_table",
    "compare",
    "labels_of",
    "load_config",
    "main",
    "paired_table",
    "render",
    "rich_table",
    "search",
    "varying_params",
]

STATUSES = ("FINISHED", "FAILED", "RUNNING", "KILLED", "SCHEDULED")
FORMATS = ("table", "csv", "markdown", "html", "png")


def _quote(value: str) -> str:
    if "'" in value:
        raise CompareError(
            f"filter value {value!r} contains a single quote, which MLflow filters cannot express"
        )
    return f"'{value}'"


def filter_string(sweep: str | None, tags: dict[str, str], status: str | None) -> str:
    """MLflow search filter for the sweep id, exact tag values and the run status."""
    parts = []
    if sweep:
        parts.append(f"tags.sweep_id = {_quote(str(sweep))}")
    for key, value in tags.items():
        parts.append(f"tags.`{key}` = {_quote(str(value))}")
    if status and str(status).lower() != "all":
        if str(status).upper() not in STATUSES:
            raise CompareError(f"status must be one of {', '.join(STATUSES)} or all, got '{status}'")
        parts.append(f"attributes.status = '{str(status).upper()}'")
    return " and ".join(parts)


def search(
    tracking_uri: str,
    experiments: str | Sequence[str] | None,
    sweep: str | None = None,
    tags: dict[str, str] | None = None,
    status: str | None = "FINISHED",
) -> pd.DataFrame:
    """mlflow.search_runs over the given experiments (None: all), as pandas."""
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///") :]).is_file():
        raise CompareError(
            f"no MLflow store at {tracking_uri}: train a run first, or set logger.tracking_uri"
        )
    client = MlflowClient(tracking_uri)
    names = [experiments] if isinstance(experiments, str) else list(experiments or [])
    for name in names:
        if client.get_experiment_by_name(name) is None:
            known = sorted(e.name for e in client.search_experiments())
            raise CompareError(
                f"no MLflow experiment '{name}' in {tracking_uri}; experiments: {', '.join(known) or 'none'}"
            )
    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.search_runs(
        experiment_names=names or None,
        search_all_experiments=not names,
        filter_string=filter_string(sweep, tags or {}, status),
        output_format="pandas",
    )
    if len(found):
        id_to_name = {e.experiment_id: e.name for e in client.search_experiments()}
        found["experiment"] = found["experiment_id"].map(id_to_name)
    return found


def compare(cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    """The table and its text rendering (empty for html/png, which `main` writes as files)."""
    if cfg.format not in FORMATS:
        raise CompareError(f"format must be one of {', '.join(FORMATS)}, got '{cfg.format}'")
    uri = tracking_uri_for(cfg)
    mark_dead_runs_in(uri)  # RUNNING runs of this host whose process died are KILLED (iqs.tracking.liveness)
    tags = {str(k): str(v) for k, v in (cfg.tags or {}).items()}
    runs = search(uri, cfg.experiment_name, cfg.sweep, tags, cfg.status)
    scope = None
    if not runs.empty and str(cfg.get("runs") or "all") == "newest" and not selects_runs(cfg):
        runs, scope, groups = newest_group(runs)
        scope = f"newest of {groups} groups: {scope}" if groups > 1 else scope
    if cfg.get("baseline") and not runs.empty:
        from mlflow import MlflowClient

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = paired_table(runs.reset_index(drop=True), cfg, MlflowClient(uri))
        for message in dict.fromkeys(str(w.message) for w in caught if w.category is UserWarning):
            print(f"iqs compare: warning: {message}", file=sys.stderr)
    else:
        table = build_table(runs, cfg)
    table.attrs["scope"] = scope
    if table.empty or cfg.format in ("html", "png"):
        return table, ""
    width = WIDE if table.attrs.get("view") == "wide" else int(cfg.get("width") or 100)
    if cfg.format == "table":
        table = fit_width(table, int(cfg.digits), title_for(table, cfg, uri), width)
    return table, render(table, cfg.format, int(cfg.digits), title_for(table, cfg, uri), width)


def selects_runs(cfg: Any) -> bool:
    """Whether the command line names the runs (experiment, sweep, CV, tags or a baseline)."""
    return any(cfg.get(key) for key in ("experiment_name", "sweep", "cv", "tags", "baseline"))


def log_to_sweep(cfg: Any, table: pd.DataFrame, path: Path) -> int:
    """Log the drawn comparison into each run of the sweep (artifact `compare/<file>`); returns how many."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri_for(cfg))
    for run_id in table.attrs.get("run_ids", []):
        client.log_artifact(run_id, str(path), "compare")
    return len(table.attrs.get("run_ids", []))


def load_config(argv: Sequence[str]) -> DictConfig:
    """conf/compare.yaml composed with the command line (`key=value`, `experiment=`, `tag.<key>=`)."""
    try:
        return compose("compare", argv)
    except CommandLineError:
        raise  # iqs.cli prints it with the way to --help, exit 2, as for every command
    except ValueError as exc:
        raise CompareError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv or [])  # `iqs compare --help` / `--cfg job`: iqs.cli
    try:
        cfg = load_config(argv)
        if cfg.get("cv"):
            from iqs.report.cv import print_cv

            return print_cv(cfg)
        table, text = compare(cfg)
        if table.empty:
            print("iqs compare: no runs match the filters", file=sys.stderr)
            return 1
        if cfg.format in ("html", "png"):
            path = Path(str(cfg.output or f"compare-{cfg.metric}.{cfg.format}"))
            write_figure(
                table, cfg.format, title_for(table, cfg, tracking_uri_for(cfg)), path, int(cfg.digits)
            )
            print(f"wrote {path}")
            log_plot = cfg.get("log_plot")
            if (log_plot is None and cfg.sweep) or log_plot:
                n = log_to_sweep(cfg, table, path)
                print(f"logged it into {n} run(s) as compare/{path.name}")
            return 0
    except CompareError as exc:
        print(f"iqs compare: {exc}", file=sys.stderr)
        return 2
    if cfg.output:
        path = Path(str(cfg.output))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {len(table)} rows to {path}")
    elif cfg.format == "table":
        from rich.console import Console

        wide = table.attrs.get("view") == "wide"
        # a terminal's own width, the least informative params giving way (fit_width); a pipe gets the
        # narrow views at `width`, the wide one whole
        narrow = int(cfg.get("width") or 100)
        tty = sys.stdout.isatty()
        width = shutil.get_terminal_size((narrow, 24)).columns if tty else (WIDE if wide else narrow)
        title = title_for(table, cfg, tracking_uri_for(cfg))
        table = fit_width(table, int(cfg.digits), title, width)
        Console(width=width).print(rich_table(table, int(cfg.digits), title))
    else:
        sys.stdout.write(text)
    return 0
