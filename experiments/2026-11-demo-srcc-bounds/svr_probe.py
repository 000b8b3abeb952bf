"""Probe how well a run's frozen embeddings can rank the demo, whatever head sits on them.

An RBF SVR on the standardised embeddings, cross-validated over photographs (5 folds: every image
is scored by a model that never saw its photograph, nor any overlapping crop of it), on exactly the embeddings `iqs train` caches for the
same overrides. It prints SRCC pooled and per source against the scores, and against the demo's latent
quality (`distortions.csv`), which no source's rater skew distorts.

    .venv/bin/python experiments/2026-11-demo-srcc-bounds/svr_probe.py backbone.input_size=224
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main(overrides: list[str]) -> None:
    from iqs.core.config import compose
    from iqs.core.preprocess import InputSpec
    from iqs.data.mixture import build_mixture
    from iqs.data.splits import assign_folds
    from iqs.train import build
    from iqs.train.datamodule import QualityDataModule
    from iqs.train.stages import frozen_features

    cfg = compose("train", ["experiment=demo", *overrides])
    mixture = build_mixture(cfg.data, cfg.thresholds)
    rebalancer = build.rebalancer(cfg)
    model = build.model(cfg, rebalancer)
    spec = InputSpec.from_meta(model.meta)
    dm = QualityDataModule(mixture, spec, rebalancer, batch_size=32, seed=int(cfg.seed))
    features = frozen_features(cfg, model, dm)
    table = dm.table.reset_index(drop=True)
    meta = pd.read_csv(Path(str(cfg.data.demo_dir)) / "distortions.csv", dtype={"image_id": str})
    meta["dataset"] = "demo_" + meta["source"]
    table = table.assign(image_id=table["image_id"].astype(str)).merge(
        meta[["dataset", "image_id", "latent_quality", "photo"]],
        on=["dataset", "image_id"],
        how="left",
        validate="1:1",
    )

    x, y = features.eval.numpy().astype(np.float64), table["score"].to_numpy()
    pred = np.empty(len(y))
    # the pipeline's own folds (`data.folds=5`): grouped by photograph, since crops of one photograph
    # overlap and a crop-level split would leak; the same assignment `iqs train data.folds=5` uses
    folds = assign_folds(table["group"], seed=int(cfg.data.seed), folds=5)
    for fold in range(5):
        train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        svr = make_pipeline(StandardScaler(), SVR(C=3.0)).fit(x[train], y[train])
        pred[test] = svr.predict(x[test])

    print(
        f"{features.key.pool} at {spec.size[0]} px, {x.shape[1]} features, {table['photo'].nunique()} photographs"
    )
    print(f"  SRCC vs score, pooled:      {spearmanr(pred, y)[0]:.3f}")
    for name, sub in table.groupby("dataset"):
        print(f"  SRCC vs score, {name:11s} {spearmanr(pred[sub.index], y[sub.index])[0]:.3f}")
    print(f"  SRCC vs latent quality:     {spearmanr(pred, table['latent_quality'])[0]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
