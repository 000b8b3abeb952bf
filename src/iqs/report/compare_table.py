"""`iqs compare`'s run table: which axes and params vary, metric columns, labels groups, sorting."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from iqs.metrics.interval_rule import TOO_FEW_SUFFIX, interval_method
from iqs.metrics.names import ALL, HIGHER_IS_BETTER, LABEL_METRICS

AXES = ("head", "rebalance", "thresholds", "data")
VIEWS = ("metric", "wide")
SUFFIX_LO, SUFFIX_HI = "_lo", "_hi"
# per dataset in the metric view: the test groups, and whether they are too few for an interval
SUFFIX_N, SUFFIX_TOO_FEW = "_n_groups", "_too_few"
NOT_METRICS = ("n_groups",)  # per-dataset keys logged next to the metrics that are not metrics
LABEL_PARAM = re.compile(r"^(thresholds\.|data\.sources\.[^.]+\.thresholds(\.|$))")


class CompareError(ValueError):
    pass


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


def informative_params(runs: pd.DataFrame, params: Sequence[str], metric_col: str | None) -> list[str]:
    """`params` (varying ones, without `params.`), those that explain most of the metric first.

    The score is the share of the metric's variance across runs that a param's values explain (one-way
    ANOVA's R², adjusted for the number of values, so that a param with a value per run does not explain
    everything by construction); a numeric param with a value per run scores its squared Spearman
    correlation instead. Then fewer distinct values first (a sweep's axes take few), then by name.
    """
    from scipy.stats import spearmanr

    y = runs[metric_col].astype(float) if metric_col in runs.columns else pd.Series(float("nan"), runs.index)
    known = y.notna()
    n, total = int(known.sum()), float(((y[known] - y[known].mean()) ** 2).sum())

    def score(key: str) -> float:
        values = runs.loc[known, f"params.{key}"].astype(str)
        k = values.nunique()
        if n < 3 or total == 0 or k < 2:
            return 0.0
        if k < n:
            means = y[known].groupby(values).transform("mean")
            r2 = float(((means - y[known].mean()) ** 2).sum()) / total
            return 1 - (1 - r2) * (n - 1) / (n - k)
        numbers = pd.to_numeric(runs.loc[known, f"params.{key}"], errors="coerce")
        if numbers.isna().any():
            return 0.0
        rho = spearmanr(numbers, y[known]).statistic
        return 0.0 if pd.isna(rho) else float(rho) ** 2

    distinct = {key: runs[f"params.{key}"].astype(str).nunique() for key in params}
    return sorted(params, key=lambda key: (-round(score(key), 6), distinct[key], key))


def chosen_params(runs: pd.DataFrame, params: list[str], cfg: Any) -> tuple[list[str], list[str]]:
    """(shown, not shown) of the varying `params`: `params=all` every one, `params=[a,b]` those, else the
    `max_params` most informative (informative_params) for `<stage>/all/<metric>`."""
    wanted = cfg.get("params")
    metric_col = f"metrics.{cfg.get('stage', 'test')}/{ALL}/{cfg.get('metric', 'srcc')}"
    ranked = informative_params(runs, params, metric_col)
    if isinstance(wanted, str) and wanted == "all":
        return ranked, []
    if wanted:
        names = [str(w) for w in wanted]
        absent = [w for w in names if f"params.{w}" not in runs.columns]
        if absent:
            raise CompareError(
                f"params: no param {', '.join(absent)} in the selected runs; varying: {', '.join(ranked) or 'none'}"
            )
        return names, [p for p in ranked if p not in names]
    limit = int(cfg.get("max_params") or len(ranked))
    return ranked[:limit], ranked[limit:]


def newest_group(runs: pd.DataFrame) -> tuple[pd.DataFrame, str, int]:
    """The runs of the newest group, what it is, and how many groups there are. A group: a CV
    (`cv_id` tag), else a sweep (`sweep_id`), else the runs outside both of one MLflow experiment and data
    axis; the newest is the one whose latest run started last."""

    def tag(name: str) -> pd.Series:
        col = f"tags.{name}"
        values = runs[col] if col in runs.columns else pd.Series(None, index=runs.index, dtype=object)
        return values.where(values.notna() & ~values.astype(str).isin(["", "none"]))

    cv, sweep = tag("cv_id"), tag("sweep_id")
    data = runs.get("tags.data", pd.Series("none", index=runs.index)).fillna("none").astype(str)
    experiment = runs.get("experiment", pd.Series("", index=runs.index)).fillna("").astype(str)
    key = (
        ("CV group " + cv)
        .fillna("sweep " + sweep)
        .fillna("runs outside sweeps of experiment " + experiment + ", data " + data)
    )
    started = pd.to_datetime(runs["start_time"]) if "start_time" in runs.columns else pd.Series(runs.index)
    newest = started.groupby(key).max().idxmax()
    return runs[key == newest], str(newest), int(key.nunique())


def is_ci_key(metric: str) -> bool:
    return metric.endswith((SUFFIX_LO, SUFFIX_HI, TOO_FEW_SUFFIX)) or metric in NOT_METRICS


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
        if (m := pat.match(c)) and runs[c].notna().any() and not is_ci_key(m["m"])
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


def run_columns(runs: pd.DataFrame, cfg: Any, narrow: bool) -> pd.DataFrame:
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
        params, hidden = chosen_params(runs, params, cfg)
        out["run_id"] = runs["run_id"].str[:8]
        shown = [a for a, v in axes.items() if v.astype(str).nunique() > 1]
        for axis in shown:
            out[axis] = axes[axis]
        for key in params:
            out[key] = runs[f"params.{key}"]
        out.attrs.update(params=params, hidden_params=hidden)
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
    out = run_columns(runs, cfg, narrow=view == "metric")
    params, hidden = out.attrs.get("params", []), out.attrs.get("hidden_params", [])
    if labels.nunique() > 1:
        out.insert(1 if view == "metric" else 2, "labels", labels)
    datasets = list(cfg.datasets) if cfg.datasets else None
    fill = _metric_view if view == "metric" else _wide_view
    shown, metrics_shown = fill(runs, out, cfg, datasets)
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
        params=params,
        hidden_params=hidden,
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


def _metric_view(
    runs: pd.DataFrame, out: pd.DataFrame, cfg: Any, datasets: list[str] | None
) -> tuple[list[str], list[str]]:
    """Columns `<ds>`, `<ds>_lo`, `<ds>_hi`, `<ds>_n_groups`, `<ds>_too_few` of `cfg.metric` into `out`.

    Returns (datasets, [metric]). An interval is kept only where iqs.metrics.interval_rule gives one for
    the run's number of test groups: a run logged before the rule keeps its number, not its interval.
    """
    metric = str(cfg.metric)
    shown = []
    for col in metric_columns(runs, cfg.stage, datasets, [metric]):
        ds = col[len(f"metrics.{cfg.stage}/") :].split("/")[0]
        shown.append(ds)
        out[ds] = runs[col]
        n_col, flag_col = f"metrics.{cfg.stage}/{ds}/n_groups", f"{col}{TOO_FEW_SUFFIX}"
        n_groups = runs[n_col] if n_col in runs.columns else pd.Series(float("nan"), index=runs.index)
        too_few = n_groups.map(lambda n: pd.notna(n) and interval_method(metric, int(n)) is None)
        if flag_col in runs.columns:
            too_few |= runs[flag_col].fillna(0).astype(float) > 0
        for suffix in (SUFFIX_LO, SUFFIX_HI):
            ci = f"{col}{suffix}"
            bound = runs[ci] if ci in runs.columns else pd.Series(float("nan"), index=runs.index)
            out[f"{ds}{suffix}"] = bound.where(~too_few)
        out[f"{ds}{SUFFIX_N}"] = n_groups
        out[f"{ds}{SUFFIX_TOO_FEW}"] = too_few.astype(bool)
    logged = sorted({c.split("/")[-1] for c in runs.columns if c.startswith(f"metrics.{cfg.stage}/")})
    if not shown and logged:
        raise CompareError(
            f"no selected run logged '{cfg.stage}/<dataset>/{metric}'; metrics: "
            + ", ".join(m for m in logged if not is_ci_key(m))
        )
    return shown, [metric]


def _wide_view(
    runs: pd.DataFrame, out: pd.DataFrame, cfg: Any, datasets: list[str] | None
) -> tuple[list[str], list[str]]:
    """One column `<ds>/<metric>` per metric in `cfg.metrics` into `out`; returns (columns, metrics)."""
    metrics = cfg.metrics if isinstance(cfg.metrics, str) else list(cfg.metrics or [])
    shown = []
    for col in metric_columns(runs, cfg.stage, datasets, metrics):
        out[col[len(f"metrics.{cfg.stage}/") :]] = runs[col]
        shown.append(col[len(f"metrics.{cfg.stage}/") :])
    return shown, sorted({c.split("/")[-1] for c in shown})
