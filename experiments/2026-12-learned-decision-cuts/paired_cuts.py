"""Label cuts vs val-tuned cuts on the same test images of each run of a sweep, paired cluster bootstrap.

    python experiments/2026-12-learned-decision-cuts/paired_cuts.py <sweep_id> [metric] > table.md

Reads each run's `predictions/test_predictions.csv` (columns label, pred_class = the head's own classes,
pred_class_tuned = the val-tuned cuts, and pred_class_tuned_pooled when the cuts were tuned per source;
group = the bootstrap's unit) and prints, per run and dataset, the metric under both and the paired
difference tuned - label with its 95% CI (iqs.metrics.bootstrap.paired_bootstrap).
"""

from __future__ import annotations

import sys

import mlflow
import pandas as pd

from iqs.metrics.bootstrap import paired_bootstrap


def main(sweep: str, metric: str = "macro_f1") -> None:
    mlflow.set_tracking_uri("sqlite:///mlruns/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.sweep_id = '{sweep}'")
    print(f"| head | dataset | {metric} label cuts | tuned | tuned - label [95% CI] | p | tuned pooled |")
    print("|---|---|---|---|---|---|---|")
    for _, run in runs.sort_values("tags.head").iterrows():
        path = mlflow.artifacts.download_artifacts(
            run_id=run["run_id"], artifact_path="predictions/test_predictions.csv"
        )
        pred = pd.read_csv(path)
        for ds in [*sorted(pred["dataset"].unique()), "all"]:
            part = pred if ds == "all" else pred[pred["dataset"] == ds]
            res = paired_bootstrap(
                metric, part["label"], part["pred_class"], part["pred_class_tuned"], part["group"]
            )
            pooled = "-"
            if "pred_class_tuned_pooled" in part:
                pooled = f"{paired_bootstrap(metric, part['label'], part['pred_class'], part['pred_class_tuned_pooled'], part['group']).estimate_b:.3f}"
            print(
                f"| {run['tags.head']} | {ds} | {res.estimate_a:.3f} | {res.estimate_b:.3f} | "
                f"{res.delta:+.3f} [{res.low:+.2f}, {res.high:+.2f}] | {res.p_value:.3f} | {pooled} |"
            )


if __name__ == "__main__":
    main(*sys.argv[1:])
