"""Stars, best-of-burst and `iqs suggest` measured on the generated library (see README.md for the commands).

    python experiments/2026-12-culling/analyse.py --library data/library-culling \
        --general-csv experiments/2026-12-culling/general.csv --personal-csv experiments/2026-12-culling/personal.csv \
        --personal-test <personal run output>/test_predictions.csv --general-ckpt <demo run best.ckpt>

Truth comes from the library's manifest (library.json): each frame's distortion level, its burst, and the
photographer's stars (5 - level within the class; `iqs.data.demo.library_layout.level_stars`).
Writes results.json and results.txt next to this file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score, f1_score

from iqs.data.demo.library import read_manifest
from iqs.data.demo.library_layout import level_class
from iqs.metrics.resample import cluster_bootstrap_ci, group_codes, resample_groups
from iqs.models.checkpoints import load_checkpoint
from iqs.train import suggest

HERE = Path(__file__).parent
RESAMPLES, CONFIDENCE, SEED = 1000, 0.95, 0


def group_ci(stat, n_rows: int, groups) -> tuple[float, float, float]:
    """(estimate, low, high) of `stat(weights (B, n_rows)) -> (B,)` by cluster bootstrap over `groups`."""
    codes, n_groups = group_codes(groups, n_rows)
    est, low, high, _ = resample_groups(
        lambda w: stat(w)[None, :], codes, n_groups, n_resamples=RESAMPLES, confidence=CONFIDENCE,
        method="percentile", seed=SEED,
    )  # fmt: skip
    return float(est[0]), float(low[0]), float(high[0])


def kappa_ci(true: np.ndarray, pred: np.ndarray, groups) -> tuple[float, float, float]:
    """Quadratic-weighted Cohen's kappa (sklearn) with row weights = how often a burst was drawn."""

    def stat(w: np.ndarray) -> np.ndarray:
        return np.array([cohen_kappa_score(true, pred, weights="quadratic", sample_weight=row) for row in w])

    return group_ci(stat, len(true), groups)


def fmt(ci: tuple[float, float, float]) -> str:
    return f"{ci[0]:.3f} [{ci[1]:.2f}, {ci[2]:.2f}]"


def frames(library: Path) -> pd.DataFrame:
    m = read_manifest(library)
    if m is None:
        raise SystemExit(f"{library}: no library.json; build it with `iqs data build-library`")
    df = pd.DataFrame(m["frames"])
    crops = int(m["spec"]["crops_per_photo"])
    df["photograph"] = df["ref"] // crops  # make_references: crops of one photograph are consecutive
    df["true_stars"] = df["stars"].where(df["stars"].isna(), df["stars"].clip(lower=1))  # -1 rejected = 1
    df["truth_class"] = df["level"].map(level_class)
    df["abs"] = [str((library / p).resolve()) for p in df["path"]]
    return df


def predictions(csv: Path, df: pd.DataFrame) -> pd.DataFrame:
    pred = pd.read_csv(csv)
    pred["abs"] = [str(Path(p).resolve()) for p in pred["path"]]
    return df.merge(
        pred[["abs", "score", "stars", "burst", "burst_rank", "pick_label"]], on="abs", suffixes=("", "_pred")
    )


def ratings(df: pd.DataFrame, name: str) -> dict:
    rated = df.dropna(subset=["true_stars", "stars_pred"])
    t, p = rated["true_stars"].to_numpy(int), rated["stars_pred"].to_numpy(int)
    srcc = cluster_bootstrap_ci("srcc", t, p, rated["burst"], n_resamples=RESAMPLES, seed=SEED)
    out = {
        "frames": len(rated),
        "bursts": int(rated["burst"].nunique()),
        "weighted_kappa": kappa_ci(t, p, rated["burst"].to_numpy()),
        "srcc": (srcc.estimate, srcc.low, srcc.high),
        "srcc_score": float(spearmanr(t, rated["score"]).statistic),
        "exact": float((t == p).mean()),
        "true_shares": np.bincount(t - 1, minlength=5).tolist(),
        "pred_shares": np.bincount(p - 1, minlength=5).tolist(),
    }
    print(f"{name}: stars on {out['frames']} frames ({out['bursts']} bursts): weighted kappa "
          f"{fmt(out['weighted_kappa'])}, SRCC {fmt(out['srcc'])}, exact {out['exact']:.2f}")  # fmt: skip
    return out


def bursts(df: pd.DataFrame, name: str) -> dict:
    """Top-1 of `iqs predict --bursts` (rank 1) against the least-distorted frame, over the bursts it
    formed with >= 2 frames; a random pick hits #least-distorted / size."""
    hits, chance, groups = [], [], []
    for burst, part in df.groupby("burst_pred"):
        if len(part) < 2:
            continue
        best = part["level"] == part["level"].min()
        hits.append(float(best[part["burst_rank"] == 1].iloc[0]))
        chance.append(float(best.mean()))
        groups.append(burst)
    hits_a, chance_a = np.asarray(hits), np.asarray(chance)

    def mean(values: np.ndarray):
        return lambda w: (w @ values) / w.sum(1)

    top1 = group_ci(mean(hits_a), len(hits_a), groups)
    rand = group_ci(mean(chance_a), len(chance_a), groups)
    delta = group_ci(mean(hits_a - chance_a), len(hits_a), groups)
    same = df.groupby("burst_pred")["burst"].nunique().eq(1).mean()
    out = {"bursts": len(hits), "top1": top1, "random": rand, "top1_minus_random": delta,
           "predict_bursts_matching_truth": float(same), "frames": len(df)}  # fmt: skip
    print(f"{name}: best of {len(hits)} bursts: top-1 {fmt(top1)} vs random {fmt(rand)}, "
          f"difference {fmt(delta)}")  # fmt: skip
    return out


def learning_curve(
    df: pd.DataFrame, ckpt: Path, cache: Path, seeds: int, budgets: list[int], step: int
) -> dict:
    """Macro-F1 of a logistic regression on the cached embeddings against the number of labels, labels
    chosen by `iqs suggest`'s BADGE or at random (both from the same random start), test photographs held
    out per seed. The oracle labels are the distortion classes (level_class), the user without noise."""
    model, _ = load_checkpoint(ckpt)
    x = suggest.embed_library(model, [Path(p) for p in df["abs"]], cache)
    y = df["truth_class"].to_numpy()
    photos = np.unique(df["photograph"])
    curves = {m: np.zeros((seeds, len(budgets))) for m in suggest.METHODS}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        test_photos = rng.choice(photos, len(photos) // 3, replace=False)
        test = np.flatnonzero(df["photograph"].isin(test_photos).to_numpy())
        pool = np.setdiff1d(np.arange(len(df)), test)
        start = rng.choice(pool, budgets[0], replace=False)
        while len(np.unique(y[start])) < 2:
            start = rng.choice(pool, budgets[0], replace=False)
        for method in suggest.METHODS:
            labelled = start.copy()
            for b, budget in enumerate(budgets):
                while len(labelled) < budget:
                    chosen, _, _ = suggest.select(
                        method, x, labelled, y[labelled], min(step, budget - len(labelled)),
                        seed=seed * 1000 + len(labelled), candidates=pool,
                    )  # fmt: skip
                    labelled = np.concatenate([labelled, chosen])
                probs, _ = suggest.fit_probabilities(x, labelled, y[labelled], 64, seed)
                curves[method][seed, b] = f1_score(y[test], probs[test].argmax(1), average="macro")
    out: dict = {"budgets": budgets, "seeds": seeds, "rows": []}
    seeds_idx = np.arange(seeds)
    for b, budget in enumerate(budgets):
        row = {"labels": budget}
        for method in suggest.METHODS:
            row[method] = group_ci(lambda w, v=curves[method][:, b]: (w @ v) / w.sum(1), seeds, seeds_idx)
        diff = curves["badge"][:, b] - curves["random"][:, b]
        row["badge_minus_random"] = group_ci(lambda w, v=diff: (w @ v) / w.sum(1), seeds, seeds_idx)
        out["rows"].append(row)
        print(f"labels {budget:3d}: badge {fmt(row['badge'])}  random {fmt(row['random'])}  "
              f"badge - random {fmt(row['badge_minus_random'])}")  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", type=Path, default=Path("data/library-culling"))
    ap.add_argument("--general-csv", type=Path, default=HERE / "general.csv")
    ap.add_argument("--personal-csv", type=Path, default=HERE / "personal.csv")
    ap.add_argument(
        "--personal-test", type=Path, required=True, help="the personal run's test_predictions.csv"
    )
    ap.add_argument("--general-ckpt", type=Path, required=True, help="the demo run's best checkpoint")
    ap.add_argument("--cache", type=Path, default=Path("cache"))
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()

    df = frames(args.library)
    results: dict = {"library": str(args.library), "frames": len(df)}
    general = predictions(args.general_csv, df)
    personal = predictions(args.personal_csv, df)
    held_out = set(pd.read_csv(args.personal_test)["path"].astype(str))
    personal_test = personal[personal["path"].isin(held_out)]
    general_test = general[general["path"].isin(held_out)]
    results["ratings"] = {
        "general_all_rated": ratings(general, "general, all rated frames"),
        "general_personal_test": ratings(general_test, "general, the personal run's test frames"),
        "personal_test": ratings(personal_test, "personal, its test frames"),
    }
    results["bursts"] = {"general_all": bursts(general, "general, every burst")}
    results["learning_curve"] = learning_curve(
        df, args.general_ckpt, args.cache, args.seeds, [6, 12, 18, 24, 36, 48, 60], 6
    )
    (HERE / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
