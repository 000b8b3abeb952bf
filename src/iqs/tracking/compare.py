"""`iqs compare`: tracked runs side by side. Options and defaults: conf/compare.yaml.

- `view=metric` (the default): one metric (`metric=srcc`), a row per run and a column per dataset
  (`all` first), each cell the test value with its 95% cluster-bootstrap CI, `0.794 [0.75, 0.83]`
  (what the run logged as `test/<ds>/<metric>_lo|_hi`). Only the axes and params that vary are shown,
  so the table fits an 80-100 column terminal.
- `view=wide`: every metric in `metrics=` for every dataset, one column each, with every axis and
  every varying param.
- `baseline=<run id, its first 8 characters, or run name>`: each other selected run against that one
  on the same test images. Per dataset: the baseline's value, the run's, and the difference with its
  paired cluster-bootstrap CI and p-value, from the runs' `predictions/test_predictions.csv`. Runs
  tested on other images are refused.
- Labels: runs whose labels differ (the `labels` tag: the threshold pair and any source's own pair)
  are listed in separate groups. Accuracy and F1 depend on the labels and are not comparable across
  groups; PLCC, SRCC, KRCC and RMSE are.
- `format=html` or `png` draws the values (or differences) with their CI bars per dataset into a file
  (`output=`, default `compare-<metric>.<format>`); with `sweep=` it is also logged into each run of the
  sweep under `compare/`.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from iqs.metrics.names import ALL, HIGHER_IS_BETTER, LABEL_METRICS
from iqs.tracking.liveness import mark_dead_runs_in
from iqs.tracking.mlflow_run import tracking_uri_for
from iqs.tracking.model_card import md_table

AXES = ("head", "rebalance", "thresholds", "data")
STATUSES = ("FINISHED", "FAILED", "RUNNING", "KILLED", "SCHEDULED")
FORMATS = ("table", "csv", "markdown", "html", "png")
VIEWS = ("metric", "wide")
WIDE = 1000  # rich tables do not expand, so this is only a ceiling
# run columns of the narrow view beyond the varying axes/params (which are more telling than names)
SUFFIX_LO, SUFFIX_HI = "_lo", "_hi"
NOT_METRICS = ("n_groups",)  # per-dataset keys logged next to the metrics that are not metrics
# filter keys read verbatim, before Hydra would turn `5_6` into the integer 56
RAW_KEYS = {
    "experiment": "experiment_name",
    "experiment_name": "experiment_name",
    "sweep": "sweep",
    "status": "status",
    "baseline": "baseline",  # a run id such as 12345678 would otherwise become an integer
    "cv": "cv",
}
LABEL_PARAM = re.compile(r"^(thresholds\.|data\.sources\.[^.]+\.thresholds(\.|$))")
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


def _is_ci_key(metric: str) -> bool:
    return metric.endswith((SUFFIX_LO, SUFFIX_HI)) or metric in NOT_METRICS


def labels_of(runs: pd.DataFrame) -> pd.Series:
    """Each run's label rule: the `labels` tag, else (runs logged before it) the thresholds tag or param."""
    out = pd.Series(None, index=runs.index, dtype=object)
    for col in ("tags.labels", "tags.thresholds", "params.thresholds.name"):
        if col in runs.columns:
            out = out.fillna(runs[col])
    return out.fillna("none").astype(str)


def metric_columns(runs: pd.DataFrame, stage: str, datasets: Sequence[str] | None, metrics: Any) -> list[str]:
    """`metrics.<stage>/<dataset>/<metric>` columns present, `all` first, then the datasets, then metric order."""
    pat = re.compile(rf"^metrics\.{re.escape(stage)}/(?P<ds>[^/]+)/(?P<m>.+)$")
    found = [
        (m["ds"], m["m"], c)
        for c in runs.columns
        if (m := pat.match(c)) and runs[c].notna().any() and not _is_ci_key(m["m"])
    ]
    ds_present = sorted({d for d, _, _ in found}, key=lambda d: (d != "all", d))
    ds_order = [d for d in (datasets or ds_present) if d in ds_present]
    want_all = metrics is None or (isinstance(metrics, str) and metrics == "all")
    m_order = sorted({m for _, m, _ in found}) if want_all else [str(m) for m in metrics]
    by_key = {(d, m): c for d, m, c in found}
    return [by_key[(d, m)] for d in ds_order for m in m_order if (d, m) in by_key]


def _ascending(cfg: Any, metric: str) -> bool:
    if cfg.get("ascending") is not None:
        return bool(cfg.ascending)
    return not HIGHER_IS_BETTER.get(metric.rsplit("/", 1)[-1], True)


def _sort_key(runs: pd.DataFrame, out: pd.DataFrame, cfg: Any) -> tuple[pd.Series | None, bool]:
    """The explicit `sort` (an error when absent), else `<stage>/all/<metric>` when some run has it."""
    sort = cfg.get("sort") or f"{cfg.stage}/{ALL}/{cfg.metric}"
    if not cfg.get("sort") and f"metrics.{sort}" not in runs.columns:
        return None, False  # e.g. RUNNING runs without test metrics yet: listed as found
    col = _sort_column(runs, out, str(sort), cfg.stage)
    key = runs[col] if col in runs.columns else out[col]
    return key, _ascending(cfg, str(sort))


def _order(out: pd.DataFrame, key: pd.Series | None, ascending: bool, labels: pd.Series) -> pd.DataFrame:
    """Sorted by `key`; runs of one labels group stay together, groups in the order of their best run."""
    if key is not None:
        out = out.loc[key.sort_values(ascending=ascending, na_position="last", kind="stable").index]
    if labels.nunique() > 1:
        rank = {g: i for i, g in enumerate(dict.fromkeys(labels.loc[out.index]))}
        out = out.loc[labels.loc[out.index].map(rank).sort_values(kind="stable").index]
    return out


def _run_columns(runs: pd.DataFrame, cfg: Any, narrow: bool) -> pd.DataFrame:
    """Who each run is: id, name/axes, varying params (narrow: only what varies)."""
    out = pd.DataFrame(index=runs.index)
    axes = {}
    for axis in AXES:
        tag, param = f"tags.{axis}", f"params.{axis}.name"
        values = runs[tag] if tag in runs.columns else pd.Series(None, index=runs.index)
        if param in runs.columns:
            values = values.fillna(runs[param])
        axes[axis] = values.fillna("none")
    params = varying_params(runs, list(cfg.ignore_params or []))
    if narrow:
        # the `labels` column already shows the threshold pairs, the declared one and the sources' own
        params = [p for p in params if not LABEL_PARAM.match(p)]
        out["run_id"] = runs["run_id"].str[:8]
        shown = [a for a, v in axes.items() if v.astype(str).nunique() > 1]
        for axis in shown:
            out[axis] = axes[axis]
        for key in params:
            out[key] = runs[f"params.{key}"]
        return out  # the run id alone when nothing varies: the name would repeat on every row
    out["run"] = runs.get("tags.mlflow.runName", runs["run_id"])
    out["run_id"] = runs["run_id"].str[:8]
    for col, src in (("experiment", "experiment"), ("status", "status"), ("sweep_id", "tags.sweep_id")):
        if src in runs.columns and runs[src].astype(str).nunique() > 1:
            out[col] = runs[src]
    for axis in AXES:
        out[axis] = axes[axis]
    for key in params:
        out[key] = runs[f"params.{key}"]
    return out


def build_table(runs: pd.DataFrame, cfg: Any) -> pd.DataFrame:
    """The comparison table of search_runs' frame, sorted and limited; `attrs` say how to show it.

    `view=metric`: columns `<ds>`, `<ds>_lo`, `<ds>_hi` of `cfg.metric`; `view=wide`: `<ds>/<metric>`.
    A `labels` column appears when the runs' labels differ.
    """
    if runs.empty:
        return pd.DataFrame()
    view = str(cfg.get("view", "wide"))
    if view not in VIEWS:
        raise CompareError(f"view must be one of {', '.join(VIEWS)}, got '{view}'")
    labels = labels_of(runs)
    out = _run_columns(runs, cfg, narrow=view == "metric")
    if labels.nunique() > 1:
        out.insert(1 if view == "metric" else 2, "labels", labels)
    datasets = list(cfg.datasets) if cfg.datasets else None
    if view == "metric":
        metric = str(cfg.metric)
        shown = []
        for col in metric_columns(runs, cfg.stage, datasets, [metric]):
            ds = col[len(f"metrics.{cfg.stage}/") :].split("/")[0]
            shown.append(ds)
            out[ds] = runs[col]
            for suffix in (SUFFIX_LO, SUFFIX_HI):
                ci = f"{col}{suffix}"
                out[f"{ds}{suffix}"] = runs[ci] if ci in runs.columns else float("nan")
        logged = sorted({c.split("/")[-1] for c in runs.columns if c.startswith(f"metrics.{cfg.stage}/")})
        if not shown and logged:
            raise CompareError(
                f"no selected run logged '{cfg.stage}/<dataset>/{metric}'; metrics: "
                + ", ".join(m for m in logged if not _is_ci_key(m))
            )
        metrics_shown = [metric]
    else:
        metrics = cfg.metrics if isinstance(cfg.metrics, str) else list(cfg.metrics or [])
        shown = []
        for col in metric_columns(runs, cfg.stage, datasets, metrics):
            out[col[len(f"metrics.{cfg.stage}/") :]] = runs[col]
            shown.append(col[len(f"metrics.{cfg.stage}/") :])
        metrics_shown = sorted({c.split("/")[-1] for c in shown})
    key, ascending = _sort_key(runs, out, cfg)
    out = _order(out, key, ascending, labels)
    if cfg.limit:
        out = out.head(int(cfg.limit))
    full_ids = runs.loc[out.index, "run_id"].tolist()
    out = out.reset_index(drop=True)
    out.attrs.update(
        view=view,
        datasets=shown if view == "metric" else [],
        metric=str(cfg.metric),
        run_ids=full_ids,
        label_groups=int(labels.loc[runs.index].nunique()),
        label_metrics=[m for m in metrics_shown if m in LABEL_METRICS],
    )
    return out


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


# ---------------------------------------------------------------- paired comparison against a baseline


def find_run(runs: pd.DataFrame, ref: str) -> int:
    """Index of the run called `ref`: a run id, its first characters (>= 6), or a run name."""
    ref = str(ref).strip()
    ids = runs["run_id"].astype(str)
    names = runs.get("tags.mlflow.runName", pd.Series("", index=runs.index)).astype(str)
    hits = runs.index[(ids == ref) | ((len(ref) >= 6) & ids.str.startswith(ref)) | (names == ref)]
    if len(hits) == 1:
        return int(hits[0])
    if len(hits) > 1:
        listed = ", ".join(f"{names[i]} ({ids[i][:8]})" for i in hits)
        raise CompareError(f"baseline '{ref}' matches {len(hits)} runs: {listed}; give its run id")
    raise CompareError(
        f"baseline '{ref}' is not among the {len(runs)} selected run(s); give a run id (or its first 8 "
        "characters) or a run name of a run the filters select"
    )


def load_predictions(client: Any, run_id: str, folder: Path) -> pd.DataFrame:
    try:
        path = client.download_artifacts(run_id, "predictions/test_predictions.csv", str(folder / run_id))
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        raise CompareError(
            f"run {run_id[:8]} has no predictions/test_predictions.csv artifact ({exc}); "
            "only runs that finished their test stage can be compared pairwise"
        ) from None
    table = pd.read_csv(path, dtype={"image_id": str, "group": str, "dataset": str})
    return table.sort_values(["dataset", "image_id"], kind="stable").reset_index(drop=True)


def check_same_test_set(base: pd.DataFrame, other: pd.DataFrame, base_name: str, other_name: str) -> None:
    """Refuse a pair of runs unless they were tested on the same images, grouped the same way."""
    kb = base["dataset"] + ":" + base["image_id"]
    ko = other["dataset"] + ":" + other["image_id"]
    only_b, only_o = sorted(set(kb) - set(ko)), sorted(set(ko) - set(kb))
    if only_b or only_o:
        example = (only_o or only_b)[0]
        raise CompareError(
            f"runs {other_name} and {base_name} were tested on different images ({len(only_o)} test "
            f"images only in {other_name}, {len(only_b)} only in {base_name}, e.g. {example}): a paired "
            "comparison needs the same test split (same data, data.seed and fractions). Compare them "
            "without baseline=, or pick a baseline tested on the same split"
        )
    if not np.allclose(base["score"].to_numpy(), other["score"].to_numpy(), rtol=0, atol=1e-5):
        raise CompareError(
            f"runs {other_name} and {base_name} have the same test images but different true scores "
            "(another version of the annotations?): they cannot be compared pairwise"
        )
    if "group" in base.columns and "group" in other.columns and not base["group"].equals(other["group"]):
        raise CompareError(
            f"runs {other_name} and {base_name} group the test images differently (another data "
            "version?): a paired comparison needs the same groups"
        )


def paired_table(runs: pd.DataFrame, cfg: Any, client: Any) -> pd.DataFrame:
    """Each selected run minus the baseline, per dataset: values, delta, its paired CI and p-value."""
    import tempfile

    from iqs.metrics import bootstrap
    from iqs.tracking.artifacts import ci_settings

    metric = str(cfg.metric)
    if metric not in bootstrap.METRICS:
        raise CompareError(f"no paired comparison for '{metric}'; metrics: {', '.join(bootstrap.METRICS)}")
    settings = ci_settings(cfg) or {"n_resamples": bootstrap.DEFAULT_RESAMPLES}
    labels = labels_of(runs)
    names = runs.get("tags.mlflow.runName", runs["run_id"]).astype(str)
    # what tells the runs apart (the varying axes/params), else the run name
    ident = _run_columns(runs, cfg, narrow=True).drop(columns=["run_id"])
    who = (
        ident.apply(lambda r: " ".join("" if pd.isna(v) else str(v) for v in r), axis=1)
        if len(ident.columns)
        else names
    )
    base_i = find_run(runs, str(cfg.baseline))
    base_name = f"{names[base_i]} ({runs.at[base_i, 'run_id'][:8]})"
    rows = []
    with tempfile.TemporaryDirectory(prefix="iqs-compare-") as tmp:
        base = load_predictions(client, runs.at[base_i, "run_id"], Path(tmp))
        datasets = [ALL, *sorted(base["dataset"].unique())]
        if cfg.datasets:
            datasets = [d for d in datasets if d in set(map(str, cfg.datasets))]
        for i in runs.index:
            if i == base_i:
                continue
            run_id = runs.at[i, "run_id"]
            name = f"{names[i]} ({run_id[:8]})"
            other = load_predictions(client, run_id, Path(tmp))
            check_same_test_set(base, other, base_name, name)
            for ds in datasets:
                a = bootstrap.EvalRows.from_predictions(base, ds)
                b = bootstrap.EvalRows.from_predictions(other, ds)
                row = {"run": names[i], "run_id": run_id[:8], "who": who[i], "dataset": ds, "metric": metric}
                y_a, pred_a = a.columns_for(metric)
                y_b, pred_b = b.columns_for(metric)
                # a label metric compares only where both runs label these images alike (e.g. `all` on
                # the same declared pair while a source uses its own pair in one of the runs)
                if metric in LABEL_METRICS and not np.array_equal(y_a, y_b):
                    row.update(note=f"labels differ ({labels[i]} vs {labels[base_i]}): not comparable")
                    rows.append(row)
                    continue
                res = bootstrap.paired_bootstrap(
                    metric, y_a, pred_a, pred_b, a.groups, y_true_b=y_b, **settings
                )
                row.update(
                    baseline=res.estimate_a,
                    value=res.estimate_b,
                    delta=res.delta,
                    delta_lo=res.low,
                    delta_hi=res.high,
                    p_value=res.p_value,
                    n_groups=res.n_groups,
                    note="",
                )
                rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(
        view="baseline",
        baseline=base_name,
        metric=metric,
        datasets=datasets,
        run_ids=list(runs["run_id"]),  # the baseline too: the comparison concerns it as well
        settings=settings,
    )
    return out


# ---------------------------------------------------------------- rendering


def _num(v: Any, digits: int) -> str:
    return "" if v is None or pd.isna(v) else f"{float(v):.{digits}f}"


def _ci_cell(v: Any, lo: Any, hi: Any, digits: int) -> str:
    if v is None or pd.isna(v):
        return ""
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return f"{float(v):.{digits}f}"
    return f"{float(v):.{digits}f} [{float(lo):.2f}, {float(hi):.2f}]"


def display_frame(table: pd.DataFrame, digits: int) -> pd.DataFrame:
    """What people read: CI columns folded into `0.794 [0.75, 0.83]` cells, numbers rounded."""
    view = table.attrs.get("view")
    if view == "metric":
        shown = table.drop(columns=[c for c in table.columns if c.endswith((SUFFIX_LO, SUFFIX_HI))])
        shown = shown.astype(object)
        for ds in table.attrs["datasets"]:
            shown[ds] = [
                _ci_cell(v, lo, hi, min(digits, 3))
                for v, lo, hi in zip(
                    table[ds], table[f"{ds}{SUFFIX_LO}"], table[f"{ds}{SUFFIX_HI}"], strict=True
                )
            ]
        return shown
    if view == "baseline":
        d = min(digits, 3)
        first = table["run_id"].ne(table["run_id"].shift())  # the run's name on its first row only
        shown = pd.DataFrame(
            {
                "run_id": table["run_id"].where(first, ""),
                "run": table["who"].where(first, ""),
                "dataset": table["dataset"],
            }
        )
        shown["baseline"] = [_num(v, d) for v in table.get("baseline", pd.Series(index=table.index))]
        shown["run value"] = [_num(v, d) for v in table.get("value", pd.Series(index=table.index))]
        cells, ps = [], []
        for _, r in table.iterrows():
            if r.get("note"):
                cells.append(str(r["note"]))
                ps.append("")
                continue
            lo, hi = r["delta_lo"], r["delta_hi"]
            ci = "" if pd.isna(lo) else f" [{lo:+.2f}, {hi:+.2f}]"
            cells.append(f"{r['delta']:+.{d}f}{ci}")
            p = r["p_value"]
            ps.append("" if pd.isna(p) else ("<0.001" if p < 0.001 else f"{p:.3f}"))
        shown["delta [CI]"] = cells
        shown["p"] = ps
        return shown
    return _formatted(table, digits)


def notes_for(table: pd.DataFrame) -> list[str]:
    """The footnotes every format carries: what the CIs are and what is not comparable."""
    notes = []
    view = table.attrs.get("view")
    if view == "metric":
        notes.append(
            "value [95% CI]: cluster bootstrap over the test split's photographs/groups (logged by each run)"
        )
    if view == "baseline":
        s = table.attrs.get("settings", {})
        notes.append(
            f"delta = run - baseline ({table.attrs['baseline']}) on the same test images; "
            f"[{int(float(s.get('confidence', 0.95)) * 100)}% CI] and two-sided p from a paired cluster "
            f"bootstrap over the test groups ({s.get('n_resamples')} resamples, {s.get('method', 'percentile')})"
        )
    if table.attrs.get("label_groups", 1) > 1 and table.attrs.get("label_metrics"):
        notes.append(
            f"{', '.join(table.attrs['label_metrics'])}: depend on the label thresholds; compare them only "
            "within one `labels` group (PLCC/SRCC/KRCC/RMSE compare across groups)"
        )
    return notes


def _formatted(table: pd.DataFrame, digits: int) -> pd.DataFrame:
    shown = table.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
    return shown


def rich_table(table: pd.DataFrame, digits: int, title: str) -> Any:
    from rich import box
    from rich.table import Table

    shown = display_frame(table, digits)
    numeric = set(table.select_dtypes("number").columns) | set(table.attrs.get("datasets") or [])
    caption = "\n".join(notes_for(table)) or None
    out = Table(
        title=title,
        caption=caption,
        header_style="bold",
        box=box.SIMPLE_HEAD,
        caption_justify="left",
        padding=(0, 0),  # the box's column separator is the one space between columns:
        show_edge=False,  # four datasets of `0.794 [0.75, 0.83]` cells fit in 100 columns
    )
    for col in shown.columns:
        out.add_column(str(col), justify="right" if col in numeric else "left")
    groups = table["labels"].tolist() if "labels" in table.columns else None
    if table.attrs.get("view") == "baseline":
        groups = table["run_id"].tolist()  # one block per run
    for i, row in enumerate(shown.itertuples(index=False)):
        if groups is not None and i > 0 and groups[i] != groups[i - 1]:
            out.add_section()
        out.add_row(*("" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in row))
    return out


def title_for(table: pd.DataFrame, cfg: Any, uri: str) -> str:
    view = table.attrs.get("view")
    if view == "metric":
        return f"{cfg.stage} {cfg.metric}: {len(table)} run(s) in {uri}"
    if view == "baseline":
        return f"{cfg.stage} {cfg.metric}: runs vs baseline {table.attrs['baseline']}"
    return f"{len(table)} run(s) in {uri}"


def render(table: pd.DataFrame, fmt: str, digits: int, title: str, width: int = WIDE) -> str:
    """CSV (full precision, CI bounds in their own columns), markdown, or the rich table as text."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "markdown":
        notes = "".join(f"\n_{n}_\n" for n in notes_for(table))
        return md_table(display_frame(table, digits)) + "\n" + notes
    from rich.console import Console

    console = Console(record=True, width=width)
    with console.capture():
        console.print(rich_table(table, digits, title))
    return console.export_text()


def figure_for(table: pd.DataFrame, title: str) -> Any:
    """Per-dataset values (or differences) with their CI bars, one row per run."""
    from iqs.tracking.plots import ci_figure

    if table.attrs.get("view") == "baseline":
        ok = table[table.get("note", "").astype(str) == ""] if "note" in table.columns else table
        ok = ok.assign(run=ok["who"] + " (" + ok["run_id"] + ")")
        runs = list(dict.fromkeys(ok["run"]))
        datasets = table.attrs["datasets"]

        def grid(col: str) -> np.ndarray:
            piv = ok.pivot_table(index="run", columns="dataset", values=col, aggfunc="first")
            return piv.reindex(index=runs, columns=datasets).to_numpy(np.float64)

        return ci_figure(
            runs, datasets, grid("delta"), grid("delta_lo"), grid("delta_hi"), title,
            f"{table.attrs['metric']}: run - baseline", zero_line=True,
        )  # fmt: skip
    datasets = table.attrs["datasets"]
    shown = display_frame(table, 3)
    who = [c for c in shown.columns if c not in datasets and c != "labels"]
    labels = [" ".join(str(v) for v in row) for row in table[who].itertuples(index=False)]
    values = table[datasets].to_numpy(np.float64)
    lows = table[[f"{d}{SUFFIX_LO}" for d in datasets]].to_numpy(np.float64)
    highs = table[[f"{d}{SUFFIX_HI}" for d in datasets]].to_numpy(np.float64)
    return ci_figure(labels, datasets, values, lows, highs, title, table.attrs["metric"])


def write_figure(table: pd.DataFrame, fmt: str, title: str, path: Path, digits: int) -> None:
    """A PNG, or an HTML page with the plot, the table and its notes."""
    import base64
    import html
    import io

    fig = figure_for(table, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "png":
        path.write_bytes(buf.getvalue())
        return
    img = base64.b64encode(buf.getvalue()).decode("ascii")
    notes = "".join(f"<p><em>{html.escape(n)}</em></p>" for n in notes_for(table))
    page = (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}</style></head><body>"
        f"<h2>{html.escape(title)}</h2>"
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{img}">'
        f"{display_frame(table, digits).to_html(index=False, escape=True, na_rep='')}{notes}</body></html>\n"
    )
    path.write_text(page)


def compare(cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    """The table and its text rendering (empty for html/png, which `main` writes as files)."""
    if cfg.format not in FORMATS:
        raise CompareError(f"format must be one of {', '.join(FORMATS)}, got '{cfg.format}'")
    uri = tracking_uri_for(cfg)
    mark_dead_runs_in(uri)  # RUNNING runs of this host whose process died are KILLED (iqs.tracking.liveness)
    tags = {str(k): str(v) for k, v in (cfg.tags or {}).items()}
    runs = search(uri, cfg.experiment_name, cfg.sweep, tags, cfg.status)
    if cfg.get("baseline") and not runs.empty:
        from mlflow import MlflowClient

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = paired_table(runs.reset_index(drop=True), cfg, MlflowClient(uri))
        for message in dict.fromkeys(str(w.message) for w in caught if w.category is UserWarning):
            print(f"iqs compare: warning: {message}", file=sys.stderr)
    else:
        table = build_table(runs, cfg)
    if table.empty or cfg.format in ("html", "png"):
        return table, ""
    width = WIDE if table.attrs.get("view") == "wide" else int(cfg.get("width") or 100)
    return table, render(table, cfg.format, int(cfg.digits), title_for(table, cfg, uri), width)


def log_to_sweep(cfg: Any, table: pd.DataFrame, path: Path) -> int:
    """Log the drawn comparison into each run of the sweep (artifact `compare/<file>`); returns how many."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri_for(cfg))
    for run_id in table.attrs.get("run_ids", []):
        client.log_artifact(run_id, str(path), "compare")
    return len(table.attrs.get("run_ids", []))


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
        # a terminal gets its own width; a pipe gets the narrow views at `width`, the wide one whole
        width = None if sys.stdout.isatty() else (WIDE if wide else int(cfg.get("width") or 100))
        Console(width=width).print(
            rich_table(table, int(cfg.digits), title_for(table, cfg, tracking_uri_for(cfg)))
        )
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
