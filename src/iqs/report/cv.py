"""k-fold cross-validation over groups: the `cv_id` that ties one configuration's folds together, and pooling.

    iqs train -m experiment=demo data.folds=5 'data.fold=range(5)'        # 5 runs, one cv_id
    iqs compare cv=<cv_id>                                                 # pooled metrics with CIs
    iqs compare cv=<cv_id> baseline=<other cv_id>                          # paired, on the same images

**Pooling.** Every group is tested in exactly one fold, so the folds' test predictions concatenated are
out-of-fold predictions of the whole (non-official-test) data. Each metric is computed ONCE on them,
with an interval over all groups (iqs.metrics.bootstrap), rather than averaged over folds:
the mean of five 3-photograph SRCCs is noisy and biased, the pooled SRCC over 15 photographs is not.
The interval's method and its minimum number of groups follow iqs.metrics.interval_rule, as for a run.
The folds' own mean ± sd is shown beside it as the spread between folds.

**Official test splits** (AVA's list, KonIQ's `set`) are left alone by the folds, so every fold tests
them: they are not out-of-fold predictions. They are kept out of the pool and reported in rows of their
own, `official-test/<dataset>`, scored once by the lowest fold's model (the folds' mean ± sd beside it
shows how much the folds' models differ on them). One caveat, stated in the
README: pooling assumes the folds' models put their scores on one scale, which holds for score heads
trained on the same data with the same recipe; the per-fold numbers show when it does not.

**cv_id** is a hash of the resolved run config without `data.fold` and without what does not change the
model (output and store paths, tags, logger), so the k jobs of one configuration share it, and two
configurations swept over the same folds get two ids that `baseline=` pairs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from iqs.metrics.bootstrap import (
    METRICS,
    BootstrapCI,
    EvalRows,
    PairedResult,
    bootstrap_metrics,
    paired_bootstrap,
)
from iqs.metrics.interval_rule import too_few_text
from iqs.metrics.label_rule import ALL

# config parts that do not change what a fold's model learns or is tested on
NOT_THE_MODEL = ("paths", "logger", "hydra", "output_dir", "tags")
KEY_COLUMNS = ["dataset", "image_id"]
# rows of the images every fold tested (an official test split): not pooled out-of-fold, shown apart
OFFICIAL = "official-test/"
OFFICIAL_COLUMN = "official_test"


class CVError(ValueError):
    """Fold runs that cannot be pooled (missing or repeated folds, images tested twice)."""


def cv_id_for(cfg: DictConfig | Mapping[str, Any]) -> str | None:
    """`cv-<hash>` for a run with `data.folds` set, else None."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    data = dict(plain.get("data") or {})
    if not data.get("folds"):
        return None
    data.pop("fold", None)
    rest = {k: v for k, v in plain.items() if k not in NOT_THE_MODEL and k != "data"}
    blob = json.dumps({**rest, "data": data}, sort_keys=True, default=str).encode()
    return "cv-" + hashlib.sha256(blob).hexdigest()[:10]


def cv_tags(cfg: DictConfig | Mapping[str, Any]) -> dict[str, str]:
    """MLflow tags of a fold run: cv_id, cv_fold, cv_folds (empty without `data.folds`)."""
    cv_id = cv_id_for(cfg)
    if cv_id is None:
        return {}
    data = cfg["data"]
    return {"cv_id": cv_id, "cv_fold": str(int(data["fold"])), "cv_folds": str(int(data["folds"]))}


# ---------------------------------------------------------------- pooling


@dataclass(frozen=True)
class PooledCV:
    cv_id: str
    folds: int
    run_ids: dict[int, str]  # fold -> run id
    predictions: pd.DataFrame  # out-of-fold test predictions, with a `fold` column
    # dataset (`official-test/<ds>` for official test images) -> metric -> pooled estimate with CI
    pooled: dict[str, dict[str, BootstrapCI]]
    per_fold: dict[str, dict[str, tuple[float, float]]]  # dataset -> metric -> (mean, sd) over folds
    n_images: dict[str, int]  # dataset -> images behind its pooled row


def pool_predictions(by_fold: Mapping[int, pd.DataFrame], folds: int) -> pd.DataFrame:
    """Concatenate the folds' test predictions; every fold present once, no image tested twice.

    Images of an official test split (AVA's list, KonIQ's `set`) are tested in every fold, since folds
    leave official splits alone; they are kept once, from the lowest fold, and marked in the column
    `official_test` (they are not out-of-fold: `pool` reports them apart). Any other image tested in
    more than one fold means the runs were not folds of one split, which is an error.
    """
    missing = sorted(set(range(folds)) - set(by_fold))
    if missing:
        raise CVError(f"folds {missing} of {folds} have no finished run; run them before pooling")
    parts = []
    for fold in sorted(by_fold):
        if not 0 <= fold < folds:
            raise CVError(f"fold {fold} is outside 0..{folds - 1}")
        parts.append(by_fold[fold].assign(fold=fold))
    out = pd.concat(parts, ignore_index=True)
    repeated = out.duplicated(KEY_COLUMNS, keep=False)
    out[OFFICIAL_COLUMN] = repeated
    if repeated.any():
        # Rows tested in several folds are official test images (the same in every fold); any other
        # repeat means the runs were not folds of one split and cannot be pooled.
        counts = out[repeated].groupby(KEY_COLUMNS).size()
        partial = counts[counts != folds]
        if len(partial):
            first = partial.index[0]
            raise CVError(
                f"image {first[1]!r} of {first[0]} is tested in {int(partial.iloc[0])} of {folds} folds; "
                "fold runs of one cv_id must test every non-official image exactly once"
            )
        out = out.drop_duplicates(KEY_COLUMNS, keep="first")
    return out.reset_index(drop=True)


def _datasets(predictions: pd.DataFrame) -> list[str]:
    return [ALL, *sorted(predictions["dataset"].astype(str).unique())]


def _parts(predictions: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(key prefix, rows): the out-of-fold pool, then the official test images if there are any."""
    official = predictions.get(OFFICIAL_COLUMN, pd.Series(False, index=predictions.index)).astype(bool)
    parts = [("", predictions[~official]), (OFFICIAL, predictions[official])]
    return [(prefix, part.reset_index(drop=True)) for prefix, part in parts if len(part)]


def point_metrics(predictions: pd.DataFrame, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """Plain (unweighted) metric values per dataset of one predictions table."""
    out: dict[str, dict[str, float]] = {}
    for ds in _datasets(predictions):
        rows = EvalRows.from_predictions(predictions, ds)
        ones = np.ones((1, len(rows.true_score)))
        with np.errstate(all="ignore"):
            out[ds] = {m: float(METRICS[m][1](*rows.columns_for(m), ones)[0]) for m in metrics}
    return out


def fold_spread(
    by_fold: Mapping[int, pd.DataFrame], metrics: Sequence[str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and sample sd over folds of each fold's own metric value (NaN folds are skipped)."""
    values = [point_metrics(p, metrics) for p in by_fold.values()]
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for ds in {d for v in values for d in v}:
        out[ds] = {}
        for m in metrics:
            xs = np.array([v[ds][m] for v in values if ds in v], dtype=np.float64)
            xs = xs[np.isfinite(xs)]
            mean = float(xs.mean()) if xs.size else float("nan")
            sd = float(xs.std(ddof=1)) if xs.size > 1 else float("nan")
            out[ds][m] = (mean, sd)
    return out


def pool(
    cv_id: str,
    by_fold: Mapping[int, pd.DataFrame],
    folds: int,
    metrics: Sequence[str],
    run_ids: Mapping[int, str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> PooledCV:
    predictions = pool_predictions(by_fold, folds)
    pooled: dict[str, dict[str, BootstrapCI]] = {}
    n_images: dict[str, int] = {}
    per_fold: dict[str, dict[str, tuple[float, float]]] = {}
    for prefix, part in _parts(predictions):
        for ds in _datasets(part):
            rows = EvalRows.from_predictions(part, ds)
            pooled[prefix + ds] = bootstrap_metrics(rows, metrics, n_resamples=n_resamples, seed=seed)
            n_images[prefix + ds] = len(rows.true_score)
        # each fold's own value on the same kind of rows (its out-of-fold part, or the official images)
        keys = part.set_index(KEY_COLUMNS).index
        fold_parts = {f: p[p.set_index(KEY_COLUMNS).index.isin(keys)] for f, p in by_fold.items()}
        spread = fold_spread({f: p for f, p in fold_parts.items() if len(p)}, metrics)
        per_fold.update({prefix + ds: v for ds, v in spread.items()})
    return PooledCV(
        cv_id=cv_id,
        folds=folds,
        run_ids=dict(run_ids or {}),
        predictions=predictions,
        pooled=pooled,
        per_fold=per_fold,
        n_images=n_images,
    )


def paired(
    a: pd.DataFrame, b: pd.DataFrame, metrics: Sequence[str], n_resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, PairedResult]]:
    """metric(b) - metric(a) per dataset on the pooled out-of-fold predictions of two configurations.

    Both must have tested the same images (the same folds of the same mixture); rows are aligned by
    (dataset, image_id) and resampled by group together.
    """
    ka = a.set_index(KEY_COLUMNS).index
    kb = b.set_index(KEY_COLUMNS).index
    if len(ka) != len(kb) or set(ka) != set(kb):
        only_a, only_b = len(ka.difference(kb)), len(kb.difference(ka))
        raise CVError(
            f"the two cross-validations tested different images ({only_a} only in the baseline, {only_b} "
            "only in the other); pair configurations swept over the same data.folds of the same mixture"
        )
    b = b.set_index(KEY_COLUMNS).loc[ka].reset_index()
    out: dict[str, dict[str, PairedResult]] = {}
    official = a.get(OFFICIAL_COLUMN, pd.Series(False, index=a.index)).astype(bool).to_numpy()
    for prefix, rows in (("", ~official), (OFFICIAL, official)):
        if not rows.any():
            continue
        part_a, part_b = a[rows].reset_index(drop=True), b[rows].reset_index(drop=True)
        for ds in _datasets(part_a):
            ra, rb = EvalRows.from_predictions(part_a, ds), EvalRows.from_predictions(part_b, ds)
            out[prefix + ds] = {}
            for m in metrics:
                (true_a, pred_a), (true_b, pred_b) = ra.columns_for(m), rb.columns_for(m)
                out[prefix + ds][m] = paired_bootstrap(
                    m, true_a, pred_a, pred_b, ra.groups, y_true_b=true_b, n_resamples=n_resamples, seed=seed
                )
    return out


# ---------------------------------------------------------------- MLflow


def fold_runs(client: Any, cv_id: str) -> tuple[int, dict[int, str]]:
    """(k, {fold: run id}) of the FINISHED runs tagged `cv_id`, over every experiment of the store."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, filter_string=f"tags.cv_id = '{cv_id}' and attributes.status = 'FINISHED'"
    )
    if not runs:
        raise CVError(f"no finished runs tagged cv_id={cv_id}; `iqs compare tag.cv_id=...` lists what exists")
    folds = {int(r.data.tags["cv_folds"]) for r in runs}
    if len(folds) != 1:
        raise CVError(f"runs tagged cv_id={cv_id} disagree on the number of folds: {sorted(folds)}")
    by_fold: dict[int, str] = {}
    for r in sorted(runs, key=lambda r: r.info.start_time or 0):
        by_fold[int(r.data.tags["cv_fold"])] = r.info.run_id  # a rerun of a fold replaces the older one
    return folds.pop(), by_fold


def load_predictions(client: Any, run_id: str) -> pd.DataFrame:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        # the client's own store, not whatever mlflow's global tracking URI happens to be
        path = client.download_artifacts(run_id, "predictions/test_predictions.csv", tmp)
        return pd.read_csv(path, dtype={"image_id": str, "group": str})


def pool_from_store(
    client: Any, cv_id: str, metrics: Sequence[str], n_resamples: int = 1000, seed: int = 0
) -> PooledCV:
    import os

    folds, run_ids = fold_runs(client, cv_id)
    # one small CSV per fold: MLflow's per-file progress bars would only be noise
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    by_fold = {f: load_predictions(client, rid) for f, rid in run_ids.items()}
    return pool(cv_id, by_fold, folds, metrics, run_ids, n_resamples, seed)


# ---------------------------------------------------------------- report


def report_frame(result: PooledCV, digits: int = 3) -> pd.DataFrame:
    """One row per (dataset, metric): pooled value [CI], the folds' mean ± sd, groups and images."""
    rows = []
    for ds, cis in result.pooled.items():
        n_images = result.n_images[ds]
        for m, ci in cis.items():
            mean, sd = result.per_fold.get(ds, {}).get(m, (float("nan"), float("nan")))
            rows.append(
                {
                    "dataset": ds,
                    "metric": m,
                    "pooled [95% CI]": ci.text(digits, 2),
                    "folds mean ± sd": "-" if np.isnan(mean) else f"{mean:.{digits}f} ± {sd:.2f}",
                    "groups": ci.n_groups,
                    "images": n_images,
                }
            )
    return pd.DataFrame(rows)


def paired_frame(result: Mapping[str, Mapping[str, PairedResult]], digits: int = 3) -> pd.DataFrame:
    """One row per (dataset, metric): baseline, other, Δ = other - baseline [CI], paired p-value."""
    rows = []
    for ds, by_metric in result.items():
        for m, r in by_metric.items():
            rows.append(
                {
                    "dataset": ds,
                    "metric": m,
                    "baseline": f"{r.estimate_a:.{digits}f}",
                    "other": f"{r.estimate_b:.{digits}f}",
                    "Δ [95% CI]": _delta_text(r, digits),
                    "p": "" if np.isnan(r.p_value) else f"{r.p_value:.3f}",
                    "groups": r.n_groups,
                }
            )
    return pd.DataFrame(rows)


def _delta_text(r: PairedResult, digits: int) -> str:
    if r.too_few_groups:
        return f"{r.delta:+.{digits}f} ({too_few_text(r.n_groups)})"
    if np.isnan(r.low) or np.isnan(r.high):
        return f"{r.delta:+.{digits}f}"
    return f"{r.delta:+.{digits}f} [{r.low:+.2f}, {r.high:+.2f}]"


def cv_compare(cfg: Any, client: Any) -> tuple[pd.DataFrame, str]:
    """`iqs compare cv=<id> [baseline=<cv id>]`: (table, title) of the pooled or paired folds."""
    # view=metric (the default): the one `metric`; view=wide: every metric in `metrics`
    wanted = [cfg.metric] if cfg.get("view", "metric") == "metric" else _metric_list(cfg.metrics)
    metrics = [m for m in wanted if m in METRICS]
    n_resamples = int(cfg.get("n_resamples") or 1000)
    result = pool_from_store(client, str(cfg.cv), metrics, n_resamples=n_resamples)
    datasets = list(cfg.datasets) if cfg.get("datasets") else None
    baseline = cfg.get("baseline")
    if baseline and str(baseline).startswith("cv-"):
        base = pool_from_store(client, str(baseline), metrics, n_resamples=n_resamples)
        table = paired_frame(
            paired(base.predictions, result.predictions, metrics, n_resamples=n_resamples),
            int(cfg.digits),
        )
        title = (
            f"{result.cv_id} vs baseline {base.cv_id}: pooled out-of-fold, {result.folds} folds, "
            "paired over groups (method: iqs.metrics.interval_rule)"
        )
    else:
        table = report_frame(result, int(cfg.digits))
        title = (
            f"{result.cv_id}: {result.folds} folds pooled out-of-fold, 95% CI over groups "
            "(method: iqs.metrics.interval_rule)"
        )
    if (table["dataset"].astype(str).str.startswith(OFFICIAL)).any():
        first = min(result.run_ids) if result.run_ids else 0
        title += (
            f"; {OFFICIAL}<ds>: official test images, tested by every fold, scored by fold {first}'s "
            "model, not in the out-of-fold pool"
        )
    if datasets:
        plain = table["dataset"].astype(str).str.removeprefix(OFFICIAL)
        table = table[plain.isin([str(d) for d in datasets])]
    return table.reset_index(drop=True), title


def _metric_list(metrics: Any) -> list[str]:
    if metrics in (None, "all"):
        return list(METRICS)
    return [str(m) for m in metrics]


def print_cv(cfg: Any) -> int:
    """The `iqs compare cv=...` command: print (or write to `output`) the pooled or paired table."""
    import sys
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from iqs.report.compare_render import render, rich_table
    from iqs.tracking.store import tracking_uri_for

    try:
        table, title = cv_compare(cfg, MlflowClient(tracking_uri_for(cfg)))
    except CVError as exc:
        print(f"iqs compare: {exc}", file=sys.stderr)
        return 2
    if cfg.get("output"):
        path = Path(str(cfg.output))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(table, str(cfg.format), int(cfg.digits), title))
        print(f"wrote {path}")
    elif cfg.format == "table":
        from rich.console import Console

        Console().print(rich_table(table, int(cfg.digits), title))
    else:
        sys.stdout.write(render(table, str(cfg.format), int(cfg.digits), title))
    return 0
