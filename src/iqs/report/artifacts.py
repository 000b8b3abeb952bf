"""What a finished run leaves behind for the test stage: plots, predictions, checkpoint, model card.

Layout of a run's artifacts:
    config.yaml                      resolved config (written when the run opens)
    git.diff                         uncommitted changes, when the checkout was dirty
    data/counts.csv                  rows per source x split x label
    plots/confusion_<dataset>.png    counts and row-normalised, one per dataset and `all`
    plots/scatter_<dataset>.png      predicted vs true score, thresholds, PLCC/SRCC
    plots/label_hist_train_<source>.png  train scores stacked by label, the source's thresholds drawn
    predictions/test_predictions.csv one row per test image (with its group and both label views)
    metrics/test_ci.csv              estimate and interval over groups of every metric per dataset
    checkpoints/<best>.ckpt          the checkpoint the test metrics come from
    model_card.md
    traceback.txt                    only when the run failed
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqs.data.plots import label_histogram
from iqs.metrics.label_rule import DECLARED_LABEL, SOURCE_PRED, LabelRule, class_columns
from iqs.metrics.names import ALL
from iqs.report import plots
from iqs.tracking.config_view import cfg_get, safe_name, to_container
from iqs.tracking.mlflow_run import TrackedRun
from iqs.tracking.run_inputs import mixture_counts

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = [
    "dataset",
    "image_id",
    "path",
    "score",
    "label",
    "pred_score",
    "pred_class",
    "prob_bad",
    "prob_normal",
    "prob_good",
]
# added by `with_groups_and_label_rule`: the row's group (the bootstrap's unit) and the label rule's views
RULE_COLUMNS = ["group", DECLARED_LABEL, SOURCE_PRED]


def check_predictions(predictions: pd.DataFrame) -> None:
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(
            f"test predictions lack columns {missing}; expected {PREDICTION_COLUMNS} "
            f"(got {list(predictions.columns)})"
        )
    bad = ~predictions["pred_class"].isin([0, 1, 2]) | ~predictions["label"].isin([0, 1, 2])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"test predictions row {row} (image_id {predictions['image_id'].iloc[row]!r}): "
            f"label/pred_class must be 0, 1 or 2, got {predictions['label'].iloc[row]!r}/"
            f"{predictions['pred_class'].iloc[row]!r}"
        )


def with_groups_and_label_rule(
    predictions: pd.DataFrame, label_table: pd.DataFrame, rule: LabelRule | None
) -> pd.DataFrame:
    """The predictions plus each row's `group` (from the data table) and the label rule's two columns."""
    out = predictions.drop(columns=[c for c in RULE_COLUMNS if c in predictions.columns])
    if "group" in label_table.columns:
        keys = (
            label_table[["dataset", "image_id", "group"]].astype(str).drop_duplicates(["dataset", "image_id"])
        )
        out = out.merge(keys, on=["dataset", "image_id"], how="left", validate="many_to_one")
        if out["group"].isna().any():
            row = int(np.flatnonzero(out["group"].isna().to_numpy())[0])
            raise ValueError(
                f"test prediction row {row} (dataset {out['dataset'].iloc[row]!r}, image_id "
                f"{out['image_id'].iloc[row]!r}) is not in the run's data table: cannot find its group"
            )
    if rule is None:
        rule = LabelRule((0.0, 1.0), {})  # no thresholds known: both views equal the stored ones
    return rule.add_columns(out)


def ci_settings(cfg: Any) -> dict[str, Any]:
    """`logger.test_ci` (conf/logger/mlflow.yaml) as keyword arguments of the bootstrap; {} when disabled."""
    from iqs.metrics import bootstrap

    node = cfg_get(cfg, "logger.test_ci") or {}
    if not bool(cfg_get(node, "enabled", True)):
        return {}
    return {
        "n_resamples": int(cfg_get(node, "n_resamples", bootstrap.DEFAULT_RESAMPLES)),
        "confidence": float(cfg_get(node, "confidence", bootstrap.DEFAULT_CONFIDENCE)),
        "method": str(cfg_get(node, "method", bootstrap.DEFAULT_METHOD)),
        "seed": int(cfg_get(node, "seed", 0)),
    }


def log_test_intervals(run: TrackedRun, predictions: pd.DataFrame, cfg: Any) -> pd.DataFrame | None:
    """Intervals over groups (iqs.metrics.interval_rule) of every test metric per dataset: metrics `test/<ds>/<m>_lo|_hi|n_groups`
    and `metrics/test_ci.csv`. None when `logger.test_ci.enabled=false`."""
    import time

    from iqs.metrics import bootstrap
    from iqs.metrics.registry import metric

    settings = ci_settings(cfg)
    if not settings:
        return None
    names = list(bootstrap.METRICS)
    from iqs.models.heads import HEADS

    if HEADS.get(str(cfg_get(cfg, "head.name", "regression"))).score_scale != "common":
        names = [m for m in names if not metric(m).common_scale]  # no common-scale score
    started = time.perf_counter()
    intervals = bootstrap.predictions_intervals(predictions, metrics=names, **settings)
    log.info(
        "test CIs: %d resamples of the groups, %s interval, %.1f s",
        settings["n_resamples"],
        settings["method"],
        time.perf_counter() - started,
    )
    run.log_metrics(bootstrap.interval_metrics(intervals, "test"))
    run.log_text(intervals.to_csv(index=False, float_format="%.6g"), "metrics/test_ci.csv")
    return intervals


def read_io_meta(checkpoint_path: str | Path | None) -> dict[str, Any] | None:
    """The checkpoint's frozen `iqs_meta` record (iqs.models.checkpoints), or None when it cannot be read."""
    if checkpoint_path is None:
        return None
    from iqs.models.checkpoints import CheckpointError, read_meta

    try:
        return read_meta(checkpoint_path)
    except CheckpointError as exc:  # a card without the record is still useful
        log.warning("no iqs_meta for the model card: %s", exc)
        return None


def reproduce_command(cfg: Any) -> str:
    """`iqs train <overrides>` of this job: Hydra's task overrides when run under Hydra."""
    overrides: list[str] | None = None
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            overrides = list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        overrides = None
    if overrides is None:
        overrides = [str(x) for x in (cfg_get(cfg, "overrides") or [])]
    quoted = [o if all(ch not in o for ch in " ,[]'\"") else f"'{o}'" for o in overrides]
    return " ".join(["iqs train", *quoted])


def _log_confusions(
    run: TrackedRun, predictions: pd.DataFrame, confusion: Mapping[str, Any], datasets: list[str]
) -> list[str]:
    names = []
    for ds in datasets:
        part = predictions if ds == ALL else predictions[predictions["dataset"] == ds]
        true_col, pred_col = class_columns(ds, part.columns)  # the label rule's view of this dataset
        from_rows = plots.confusion_from_labels(part[true_col].astype(int), part[pred_col].astype(int))
        given = confusion.get(ds)
        cm = from_rows if given is None else np.asarray(given)
        if given is not None and not np.array_equal(np.asarray(given, dtype=np.int64), from_rows):
            log.warning(
                "confusion matrix passed for '%s' differs from the predictions CSV; drawing the one passed",
                ds,
            )
        name = f"plots/confusion_{safe_name(ds)}.png"
        run.log_figure(plots.confusion_figure(cm, f"{ds}: true (rows) vs predicted (columns)"), name)
        names.append(name)
    return names


def log_test_artifacts(
    run: TrackedRun,
    predictions: pd.DataFrame,
    metrics: Mapping[str, float],
    confusion: Mapping[str, Any],
    label_table: pd.DataFrame,
    thresholds: tuple[float, float],
    source_thresholds: Mapping[str, tuple[float, float]],
    cfg: Any,
    checkpoint_path: str | Path | None,
) -> list[str]:
    """Write every test-stage artifact into `run`; returns the artifact paths written.

    `thresholds`: the run's declared pair; `source_thresholds`: each source's own pair
    (`Mixture.source_thresholds`, the ones its labels were made with).

    `metrics` not yet in the run (e.g. when Lightning did not log them) are logged too, so the model
    card and the run's metrics never disagree.
    """
    check_predictions(predictions)
    if checkpoint_path is not None and not Path(checkpoint_path).is_file():
        raise FileNotFoundError(f"best checkpoint {checkpoint_path} does not exist")
    thresholds = (float(thresholds[0]), float(thresholds[1]))
    per_source = _pairs_of(label_table, source_thresholds)
    rule = LabelRule(thresholds, per_source)
    predictions = with_groups_and_label_rule(predictions, label_table, rule)
    datasets = [*sorted(predictions["dataset"].astype(str).unique()), ALL]
    written: list[str] = []

    logged = run.client.get_run(run.run_id).data.metrics
    missing = {k: float(v) for k, v in metrics.items() if k not in logged and v is not None}
    if missing:
        run.log_metrics(missing)

    if log_test_intervals(run, predictions, cfg) is not None:
        written.append("metrics/test_ci.csv")
    if bool(cfg_get(cfg, "logger.plots", True)):  # off: no figures (about half a second of drawing each)
        written += _log_confusions(run, predictions, confusion, datasets)
        written += _log_plots(run, predictions, label_table, datasets, thresholds, per_source, cfg)

    written += _log_files(run, predictions, checkpoint_path)
    card = _model_card(run, {**logged, **metrics}, label_table, rule, cfg, checkpoint_path)
    run.log_text(card, "model_card.md")
    written.append("model_card.md")
    return written


def _pairs_of(
    label_table: pd.DataFrame, source_thresholds: Mapping[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    """The threshold pair of each source in the table; a source without one is an error, not a default."""
    sources = sorted(label_table["dataset"].astype(str).unique())
    unknown = [name for name in sources if name not in source_thresholds]
    if unknown:
        raise ValueError(
            f"no threshold pair for sources {unknown}; source_thresholds has {sorted(source_thresholds)}"
        )
    return {name: (float(source_thresholds[name][0]), float(source_thresholds[name][1])) for name in sources}


def _log_files(run: TrackedRun, predictions: pd.DataFrame, checkpoint_path: str | Path | None) -> list[str]:
    """`predictions/test_predictions.csv` and the tested checkpoint under `checkpoints/`."""
    with tempfile.TemporaryDirectory(prefix="iqs-artifacts-") as tmp:
        csv = Path(tmp) / "test_predictions.csv"
        predictions.to_csv(csv, index=False, float_format="%.6g")
        run.log_artifact(csv, "predictions")
    written = ["predictions/test_predictions.csv"]
    if checkpoint_path is not None:
        run.log_artifact(checkpoint_path, "checkpoints")
        written.append(f"checkpoints/{Path(checkpoint_path).name}")
    return written


def _model_card(
    run: TrackedRun,
    metrics: Mapping[str, float],
    label_table: pd.DataFrame,
    rule: LabelRule,
    cfg: Any,
    checkpoint_path: str | Path | None,
) -> str:
    from iqs.report.model_card import render_model_card

    return render_model_card(
        title=run.run_name,
        source=f"MLflow run `{run.run_id}` in experiment `{run.experiment_name}`",
        meta=read_io_meta(checkpoint_path),
        metrics=metrics,
        tags=run.client.get_run(run.run_id).data.tags,
        cfg=to_container(cfg),
        thresholds=rule.declared,
        counts=mixture_counts(label_table),
        source_thresholds=dict(rule.per_source),
        command=reproduce_command(cfg),
    )


def _log_plots(
    run: TrackedRun,
    predictions: pd.DataFrame,
    label_table: pd.DataFrame,
    datasets: list[str],
    thresholds: tuple[float, float],
    per_source: dict[str, tuple[float, float]],
    cfg: Any,
) -> list[str]:
    """Scatter of predicted vs true score per dataset, and each source's training-label histogram."""
    written: list[str] = []
    from iqs.models.heads import HEADS

    head = str(cfg_get(cfg, "head.name", ""))
    on_common_scale = head not in HEADS or HEADS.get(head).score_scale == "common"
    for ds in datasets:
        part = predictions if ds == ALL else predictions[predictions["dataset"] == ds]
        fig = plots.scatter_figure(
            part["score"].to_numpy(),
            part["pred_score"].to_numpy(),
            thresholds if ds == ALL else per_source.get(ds, thresholds),
            ds,
            pred_on_common_scale=on_common_scale,
        )
        name = f"plots/scatter_{safe_name(ds)}.png"
        run.log_figure(fig, name)
        written.append(name)

    train = label_table[label_table["split"] == "train"] if "split" in label_table.columns else label_table
    for source, (t1, t2) in per_source.items():
        scores = train.loc[train["dataset"].astype(str) == source, "score"].to_numpy()
        name = f"plots/label_hist_train_{safe_name(source)}.png"
        run.log_figure(
            label_histogram(scores, t1, t2, title=f"{source}: train split, {len(scores)} images"), name
        )
        written.append(name)
    return written
