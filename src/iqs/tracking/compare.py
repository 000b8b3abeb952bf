"""`iqs compare`: tracked runs side by side, one row per run.

Columns: the run, the swept axes (head, rebalance, thresholds, data), every other param that varies
across the selected runs, then `<dataset>/<metric>` for the chosen stage (default: test PLCC, SRCC,
macro-F1 and F1 per class, `all` first). Options and defaults: conf/compare.yaml.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from iqs.tracking.mlflow_run import tracking_uri_for
from iqs.tracking.model_card import md_table

AXES = ("head", "rebalance", "thresholds", "data")
STATUSES = ("FINISHED", "FAILED", "RUNNING", "KILLED", "SCHEDULED")
FORMATS = ("table", "csv", "markdown")
WIDE = 1000  # rich tables do not expand, so this is only a ceiling
# filter keys read verbatim, before Hydra would turn `5_6` into the integer 56
RAW_KEYS = {
    "experiment": "experiment_name",
    "experiment_name": "experiment_name",
    "sweep": "sweep",
    "status": "status",
    "cv": "cv",
    "baseline": "baseline",
}
TAG_ARG = re.compile(r"^\+?tags?\.(?P<key>[^=]+)=(?P<value>.*)$")


class CompareError(ValueError):
    pass


def parse_argv(argv: Sequence[str]) -> tuple[list[str], dict[str, Any], dict[str, str]]:
    """Split argv into Hydra overrides, verbatim filters and tag filters."""
    overrides: list[str] = []
    raw: dict[str, Any] = {}
    tags: dict[str, str] = {}
    for arg in argv:
        if (m := TAG_ARG.match(arg)) is not None:
            tags[m["key"]] = _unquote(m["value"])
            continue
        key, sep, value = arg.partition("=")
        if sep and key in RAW_KEYS:
            value = _unquote(value)
            if value.startswith("[") and value.endswith("]"):
                raw[RAW_KEYS[key]] = [_unquote(v.strip()) for v in value[1:-1].split(",") if v.strip()]
            else:
                raw[RAW_KEYS[key]] = None if value in ("", "null") else value
            continue
        if "=" not in arg:
            raise CompareError(f"iqs compare: expected key=value, got '{arg}'")
        overrides.append(arg)
    return overrides, raw, tags


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


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


def _varying(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if frame[c].astype(str).nunique(dropna=False) > 1]


def varying_params(runs: pd.DataFrame, ignore: Sequence[str] = ()) -> list[str]:
    """Params (without `params.`) that differ across runs, minus those an axis already explains.

    A `head.*` param that changes only because the head changes is the head's own setting, not a
    separate experimental knob: it is shown only when it varies among runs with the same head.
    """
    cols = [c for c in runs.columns if c.startswith("params.")]
    out = []
    for col in _varying(runs, cols):
        key = col[len("params.") :]
        if any(key.startswith(p) for p in ignore) or key.endswith(".name") and key.split(".")[0] in AXES:
            continue
        axis = key.split(".")[0]
        axis_col = f"tags.{axis}"
        if axis in AXES and axis_col in runs.columns:
            per_axis = runs.groupby(runs[axis_col].astype(str))[col].agg(
                lambda s: s.astype(str).nunique(dropna=False)
            )
            if (per_axis <= 1).all():
                continue
        out.append(key)
    return sorted(out)


def metric_columns(runs: pd.DataFrame, stage: str, datasets: Sequence[str] | None, metrics: Any) -> list[str]:
    """`metrics.<stage>/<dataset>/<metric>` columns present, `all` first, then the datasets, then metric order."""
    pat = re.compile(rf"^metrics\.{re.escape(stage)}/(?P<ds>[^/]+)/(?P<m>.+)$")
    found = [(m["ds"], m["m"], c) for c in runs.columns if (m := pat.match(c)) and runs[c].notna().any()]
    ds_present = sorted({d for d, _, _ in found}, key=lambda d: (d != "all", d))
    ds_order = [d for d in (datasets or ds_present) if d in ds_present]
    want_all = metrics is None or (isinstance(metrics, str) and metrics == "all")
    m_order = sorted({m for _, m, _ in found}) if want_all else [str(m) for m in metrics]
    by_key = {(d, m): c for d, m, c in found}
    return [by_key[(d, m)] for d in ds_order for m in m_order if (d, m) in by_key]


def build_table(runs: pd.DataFrame, cfg: Any) -> pd.DataFrame:
    """The comparison table from search_runs' frame (sorted, limited)."""
    if runs.empty:
        return pd.DataFrame()
    out = pd.DataFrame(index=runs.index)
    out["run"] = runs.get("tags.mlflow.runName", runs["run_id"])
    out["run_id"] = runs["run_id"].str[:8]
    for col, src in (("experiment", "experiment"), ("status", "status"), ("sweep_id", "tags.sweep_id")):
        if src in runs.columns and runs[src].astype(str).nunique() > 1:
            out[col] = runs[src]
    for axis in AXES:
        tag, param = f"tags.{axis}", f"params.{axis}.name"
        values = runs[tag] if tag in runs.columns else pd.Series(None, index=runs.index)
        if param in runs.columns:
            values = values.fillna(runs[param])
        out[axis] = values.fillna("none")
    for key in varying_params(runs, list(cfg.ignore_params or [])):
        out[key] = runs[f"params.{key}"]
    metrics = cfg.metrics if isinstance(cfg.metrics, str) else list(cfg.metrics or [])
    datasets = list(cfg.datasets) if cfg.datasets else None
    for col in metric_columns(runs, cfg.stage, datasets, metrics):
        out[col[len(f"metrics.{cfg.stage}/") :]] = runs[col]
    sort_col = _sort_column(runs, out, str(cfg.sort), cfg.stage) if cfg.sort else None
    if sort_col is not None:
        key = runs[sort_col] if sort_col in runs.columns else out[sort_col]
        out = out.loc[key.sort_values(ascending=bool(cfg.ascending), na_position="last", kind="stable").index]
    if cfg.limit:
        out = out.head(int(cfg.limit))
    return out.reset_index(drop=True)


def _sort_column(runs: pd.DataFrame, out: pd.DataFrame, sort: str, stage: str) -> str:
    for cand in (f"metrics.{sort}", f"metrics.{stage}/{sort}", f"params.{sort}"):
        if cand in runs.columns:
            return cand
    if sort in out.columns:
        return sort
    metrics = sorted(c[len("metrics.") :] for c in runs.columns if c.startswith("metrics."))
    raise CompareError(
        f"cannot sort by '{sort}': no such metric or column; metrics: {', '.join(metrics) or 'none'}"
    )


def _formatted(table: pd.DataFrame, digits: int) -> pd.DataFrame:
    shown = table.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
    return shown


def rich_table(table: pd.DataFrame, digits: int, title: str) -> Any:
    from rich.table import Table

    numeric = set(table.select_dtypes("number").columns)
    out = Table(title=title, header_style="bold")
    for col in table.columns:
        out.add_column(str(col), justify="right" if col in numeric else "left")
    for row in _formatted(table, digits).itertuples(index=False):
        out.add_row(*("" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in row))
    return out


def render(table: pd.DataFrame, fmt: str, digits: int, title: str) -> str:
    """CSV (full precision), markdown, or the rich table as plain text."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "markdown":
        return md_table(_formatted(table, digits)) + "\n"
    from rich.console import Console

    console = Console(record=True, width=WIDE)
    with console.capture():
        console.print(rich_table(table, digits, title))
    return console.export_text()


def compare(cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    """The table and its rendering for a composed compare config."""
    if cfg.format not in FORMATS:
        raise CompareError(f"format must be one of {', '.join(FORMATS)}, got '{cfg.format}'")
    uri = tracking_uri_for(cfg)
    tags = {str(k): str(v) for k, v in (cfg.tags or {}).items()}
    runs = search(uri, cfg.experiment_name, cfg.sweep, tags, cfg.status)
    table = build_table(runs, cfg)
    title = f"{len(table)} run(s) in {uri}"
    return table, render(table, cfg.format, int(cfg.digits), title) if len(table) else ""


def load_config(argv: Sequence[str]) -> DictConfig:
    from iqs.config import compose

    overrides, raw, tags = parse_argv(argv)
    cfg = compose("compare", overrides)
    OmegaConf.set_struct(cfg, False)
    for key, value in raw.items():
        cfg[key] = value
    composed_tags = OmegaConf.to_container(cfg.tags) if cfg.get("tags") is not None else {}
    cfg.tags = {**composed_tags, **tags}
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip() + "\n\nOptions (key=value), defaults from conf/compare.yaml:\n")
        print(OmegaConf.to_yaml(load_config([])))
        return 0
    try:
        cfg = load_config(argv)
        if cfg.get("cv"):
            from iqs.tracking.cv import print_cv

            return print_cv(cfg)
        table, text = compare(cfg)
    except CompareError as exc:
        print(f"iqs compare: {exc}", file=sys.stderr)
        return 2
    if table.empty:
        print("iqs compare: no runs match the filters", file=sys.stderr)
        return 1
    if cfg.output:
        path = Path(str(cfg.output))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {len(table)} runs to {path}")
    elif cfg.format == "table":
        from rich.console import Console

        # a pipe or a file gets the whole table, not one squeezed to 80 columns
        Console(width=None if sys.stdout.isatty() else WIDE).print(
            rich_table(table, int(cfg.digits), f"{len(table)} run(s) in {tracking_uri_for(cfg)}")
        )
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
