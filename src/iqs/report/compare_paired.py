"""`iqs compare baseline=<run>`: each run minus the baseline on the same test images, paired CIs and p."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqs.metrics.names import ALL, LABEL_METRICS
from iqs.report.compare_table import CompareError, labels_of, run_columns


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
    from iqs.report.artifacts import ci_settings

    metric = str(cfg.metric)
    if metric not in bootstrap.METRICS:
        raise CompareError(f"no paired comparison for '{metric}'; metrics: {', '.join(bootstrap.METRICS)}")
    settings = ci_settings(cfg) or {
        "n_resamples": bootstrap.DEFAULT_RESAMPLES,
        "method": bootstrap.DEFAULT_METHOD,
    }
    labels = labels_of(runs)
    names = runs.get("tags.mlflow.runName", runs["run_id"]).astype(str)
    # what tells the runs apart (the varying axes/params), else the run name
    ident = run_columns(runs, cfg, narrow=True).drop(columns=["run_id"])
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
                row = {"run": names[i], "run_id": run_id[:8], "who": who[i], "dataset": ds, "metric": metric}
                note = f"labels differ ({labels[i]} vs {labels[base_i]}): not comparable"
                rows.append({**row, **paired_row(metric, base, other, ds, settings, note)})
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


def paired_row(
    metric: str, base: pd.DataFrame, other: pd.DataFrame, dataset: str, settings: dict, labels_note: str
) -> dict[str, Any]:
    """`other` minus `base` on `dataset`: the two values, the delta with its paired CI, p and n_groups."""
    from iqs.metrics import bootstrap

    a = bootstrap.EvalRows.from_predictions(base, dataset)
    b = bootstrap.EvalRows.from_predictions(other, dataset)
    y_a, pred_a = a.columns_for(metric)
    y_b, pred_b = b.columns_for(metric)
    # a label metric compares only where both runs label these images alike (e.g. `all` on
    # the same declared pair while a source uses its own pair in one of the runs)
    if metric in LABEL_METRICS and not np.array_equal(y_a, y_b):
        return {"note": labels_note}
    res = bootstrap.paired_bootstrap(metric, y_a, pred_a, pred_b, a.groups, y_true_b=y_b, **settings)
    return {
        "baseline": res.estimate_a,
        "value": res.estimate_b,
        "delta": res.delta,
        "delta_lo": res.low,
        "delta_hi": res.high,
        "p_value": res.p_value,
        "n_groups": res.n_groups,
        "too_few_groups": res.too_few_groups,  # below iqs.metrics.interval_rule's minimum: no CI, no p
        "note": "",
    }
