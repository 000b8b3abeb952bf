"""Answer this folder's two questions from the tracked runs, with cluster-bootstrap CIs.

    python experiments/2026-12-demo-shortcuts/analyse.py            # after the runs in README.md
    python experiments/2026-12-demo-shortcuts/analyse.py --json out.json

Finds, in the MLflow store (`mlruns/`), the newest FINISHED run of each configuration below (matched by
its logged params), reads its `predictions/test_predictions.csv`, and attaches each test image's
photograph and crop from the demo's `distortions.csv`. Intervals: `iqs.metrics.bootstrap` (percentile,
2,000 resamples of the test split's photographs; paired for run-vs-run differences). A second
interval resamples crops instead of photographs; crops of one photograph overlap, so it is too narrow
and printed only to show how much the unit matters.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

RESAMPLES = 2000
# configuration -> params it must have (flattened config as logged; absent keys count as "null")
RUNS: dict[str, dict[str, str]] = {
    "none": {"head.name": "regression", "rebalance.name": "none"},
    "sampler": {"head.name": "regression", "rebalance.name": "sampler"},
    "distribution": {"head.name": "distribution", "rebalance.name": "none"},
    "classification": {"head.name": "classification", "rebalance.name": "none"},
    "koniq_bad_only": {
        "head.name": "regression",
        "rebalance.name": "none",
        "data.sources.demo_koniq.keep_classes": "[0]",
    },
    **{
        f"lodo_{ds}": {"head.name": "regression", "rebalance.name": "none", "data.held_out": ds}
        for ds in ("demo_ava", "demo_koniq", "demo_spaq")
    },
}
DEFAULTS = {"data.name": "demo", "data.seed": "0", "thresholds.name": "5_6"}
NULLABLE = ("data.sources.demo_koniq.keep_classes", "data.held_out")


def find_run(client, experiment_ids: list[str], want: dict[str, str]):
    need = {**DEFAULTS, **{k: "null" for k in NULLABLE}, **want}
    for run in client.search_runs(
        experiment_ids, "attributes.status = 'FINISHED'", order_by=["start_time DESC"]
    ):
        params = run.data.params
        if all(params.get(k, "null") == v for k, v in need.items()):
            return run
    return None


def predictions(client, run, meta: pd.DataFrame) -> pd.DataFrame:
    from mlflow.artifacts import download_artifacts

    path = download_artifacts(
        run_id=run.info.run_id,
        artifact_path="predictions/test_predictions.csv",
        tracking_uri=client.tracking_uri,
    )
    df = pd.read_csv(path, dtype={"image_id": str})
    out = df.merge(meta, on=["dataset", "image_id"], how="left", validate="one_to_one")
    if out["photo"].isna().any():
        raise SystemExit(
            f"run {run.info.run_id}: test images missing from distortions.csv (another demo build?)"
        )
    return out


def paired(metric: str, a: pd.DataFrame, b: pd.DataFrame, unit: str) -> dict:
    """metric(b) - metric(a) on the test images both runs share, resampling `unit` (photo or reference)."""
    from iqs.metrics.bootstrap import METRICS, paired_bootstrap

    m = a.merge(b, on=["dataset", "image_id"], suffixes=("_a", "_b"), validate="one_to_one")
    if len(m) != len(a) or len(m) != len(b):
        raise SystemExit(
            f"paired {metric}: the runs' test images differ ({len(a)}, {len(b)}, {len(m)} shared)"
        )
    score = METRICS[metric][0] == "score"
    truth = m["score_a"] if score else m["label_a"]
    pa, pb = (m["pred_score_a"], m["pred_score_b"]) if score else (m["pred_class_a"], m["pred_class_b"])
    r = paired_bootstrap(metric, truth, pa, pb, m[f"{unit}_a"], n_resamples=RESAMPLES, seed=0)
    return {
        "a": r.estimate_a,
        "b": r.estimate_b,
        "delta": r.delta,
        "low": r.low,
        "high": r.high,
        "p": r.p_value,
        "groups": r.n_groups,
    }


def fmt(d: dict) -> str:
    return (
        f"{d['a']:.3f} -> {d['b']:.3f}  delta {d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        f"  p={d['p']:.2f}  ({d['groups']} groups)"
    )


def ci_text(v: dict) -> str:
    return f"{v['srcc']:.3f} [{v['low']:.2f}, {v['high']:.2f}]"


def probe_ci(overrides: list[str]) -> dict:
    """Identity probe on the embeddings a run cached for this mixture, with a photograph-bootstrap CI."""
    from iqs.core.config import compose
    from iqs.data.audit import cached_embeddings, composition, identity_probe
    from iqs.data.mixture import build_mixture
    from iqs.metrics.bootstrap import cluster_bootstrap_ci

    cfg = compose("train", ["experiment=demo", *overrides])
    mix = build_mixture(cfg.data, cfg.thresholds)
    comp = composition(mix.table)
    entries = cached_embeddings(str(cfg.paths.cache_dir), mix.fingerprint)
    if not entries:
        raise SystemExit(f"no feature cache for {overrides or 'the demo'}: run its `iqs train` first")
    out = identity_probe(entries[0][2], mix.table["dataset"].to_numpy(), mix.table["group"].to_numpy())
    pred = out["predictions"]
    codes = {s: i for i, s in enumerate(sorted(set(pred["source"])))}
    ci = cluster_bootstrap_ci(
        "balanced_acc",
        pred["source"].map(codes),
        pred["predicted"].map(codes),
        pred["group"],
        n_resamples=RESAMPLES,
        seed=0,
    )
    return {
        "balanced_accuracy": out["balanced_accuracy"],
        "low": ci.low,
        "high": ci.high,
        "chance": out["chance"],
        "recall": out["recall"],
        "photographs": ci.n_groups,
        "cramers_v_train": comp["cramers_v"],
        "composition_warnings": comp["warnings"],
    }


def main(argv: list[str]) -> None:
    import mlflow

    from iqs.core.config import compose

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    ap.add_argument("--json", help="also write every number to this file")
    args = ap.parse_args(argv)

    client = mlflow.tracking.MlflowClient(args.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    cfg = compose("train", ["experiment=demo"])
    meta = pd.read_csv(Path(str(cfg.data.demo_dir)) / "distortions.csv", dtype={"image_id": str})
    meta = meta.assign(dataset="demo_" + meta["source"])[["dataset", "image_id", "photo", "reference"]]

    runs, preds = {}, {}
    for name, want in RUNS.items():
        run = find_run(client, experiments, want)
        if run is None:
            print(f"[{name}] no finished run with {want}: run it first (README.md)")
            continue
        runs[name] = run.info.run_id
        preds[name] = predictions(client, run, meta)
        print(f"[{name}] run {run.info.run_id} ({run.info.run_name})")
    result: dict = {"runs": runs, "resamples": RESAMPLES}

    def part(name: str, ds: str) -> pd.DataFrame:
        df = preds[name]
        return df if ds == "all" else df[df["dataset"] == ds]

    # the README's "Results on the demo" table: every head, test SRCC with its photograph-bootstrap CI
    from iqs.metrics.bootstrap import cluster_bootstrap_ci

    print("\nTest SRCC per head (rebalance=none), 95% CI over the test split's photographs")
    heads = {}
    for name in ("none", "distribution", "classification"):
        if name not in preds:
            continue
        row = {}
        for ds in ("all", "demo_ava", "demo_koniq", "demo_spaq"):
            df = part(name, ds)
            ci = cluster_bootstrap_ci(
                "srcc", df["score"], df["pred_score"], df["photo"], n_resamples=RESAMPLES
            )
            row[ds] = {"srcc": ci.estimate, "low": ci.low, "high": ci.high, "photographs": ci.n_groups}
        heads[name] = row
        print(
            f"  {'regression' if name == 'none' else name:15s} "
            + "  ".join(f"{ds} {ci_text(v)}" for ds, v in row.items())
        )
    result["heads"] = heads

    # Q1: does rebalancing (sampler) help on the AVA-like source?
    if {"none", "sampler"} <= set(preds):
        print("\nQ1 rebalance=none -> sampler, regression head, test split (paired, same images)")
        q1 = {}
        for ds in ("demo_ava", "all"):
            for metric in ("srcc", "plcc", "macro_f1", "balanced_acc", "f1_bad", "f1_good"):
                for unit in ("photo", "reference"):
                    d = paired(metric, part("none", ds), part("sampler", ds), unit)
                    q1[f"{ds}/{metric}/{unit}"] = d
                    if unit == "photo" or metric == "srcc":
                        print(f"  {ds:9s} {metric:13s} by {unit:9s}: {fmt(d)}")
        result["q1"] = q1

    # Q2: does KonIQ-like bad data teach dataset identity?
    print("\nQ2 identity probe on the frozen embeddings (grouped 5-fold; CI over photographs)")
    q2: dict = {}
    for name, overrides in (
        ("all classes", []),
        ("koniq bad only", ["data.sources.demo_koniq.keep_classes=[0]"]),
    ):
        try:
            p = probe_ci(overrides)
        except SystemExit as exc:
            print(f"  {name}: {exc}")
            continue
        q2[f"probe/{name}"] = p
        print(
            f"  {name:15s}: balanced accuracy {p['balanced_accuracy']:.3f} [{p['low']:.3f}, {p['high']:.3f}] "
            f"vs chance {p['chance']:.3f}; recall "
            + ", ".join(f"{s} {r:.2f}" for s, r in p["recall"].items())
            + f"; Cramér's V (train) {p['cramers_v_train']:.3f}"
        )
        for w in p["composition_warnings"]:
            print(f"    warning: {w}")
    if {"none", "koniq_bad_only"} <= set(preds):
        print("  model trained with KonIQ-like bad only vs all classes, on the other sources' test images:")
        for ds in ("demo_ava", "demo_spaq"):
            for metric in ("srcc", "balanced_acc"):
                d = paired(metric, part("none", ds), part("koniq_bad_only", ds), "photo")
                q2[f"{ds}/{metric}"] = d
                print(f"    {ds:9s} {metric:13s}: {fmt(d)}")
        # KonIQ-like bad test images are in both runs: does the bad-only model call them bad more often?
        bad_a = part("none", "demo_koniq")
        bad_b = part("koniq_bad_only", "demo_koniq")
        bad_a = bad_a[bad_a["image_id"].isin(bad_b["image_id"])]
        d = paired("acc", bad_a, bad_b, "photo")
        q2["demo_koniq_bad/recall"] = d
        print(f"    demo_koniq bad images, recall of bad: {fmt(d)}")
    lodo: dict = {}
    for ds in ("demo_ava", "demo_koniq", "demo_spaq"):
        if {"none", f"lodo_{ds}"} <= set(preds):
            print(f"  leave {ds} out (trained on the other two sources only), on {ds}'s test images:")
            for metric in ("srcc", "balanced_acc"):
                d = paired(metric, part("none", ds), part(f"lodo_{ds}", ds), "photo")
                lodo[f"{ds}/{metric}"] = d
                print(f"    {ds} {metric:13s}: {fmt(d)}")
    result["lodo"] = lodo
    result["q2"] = q2
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
