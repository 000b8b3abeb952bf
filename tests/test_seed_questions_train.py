"""`iqs train` end to end with the ordinal head, the rank head and loss.rank_weight, plus decision cuts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import seed_store
from iqs.core.config import compose
from test_train import _isolated_tracking, demo_sources, run_train, shrink, tiny_demo  # noqa: F401


@pytest.mark.slow
def test_rank_mixture_preset_composes() -> None:
    from iqs.train.options import rank_weight, within_source_batches

    cfg = compose("train", ["experiment=rank_mixture"])
    assert cfg.head.name == "rank" and cfg.decision_cuts.per_source is True
    assert within_source_batches(cfg) == {"sources_per_batch": None}
    plain = compose("train", ["experiment=demo", "head=regression"])
    assert within_source_batches(plain) is None and rank_weight(plain) == 0.0
    mixed = compose("train", ["experiment=demo", "head=regression", "loss.rank_weight=0.5"])
    assert within_source_batches(mixed) is not None and rank_weight(mixed) == 0.5
    with pytest.raises(ValueError, match="head=rank"):
        rank_weight(compose("train", ["experiment=rank_mixture", "loss.rank_weight=1"]))


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=rank_mixture", "decision_cuts.bake=true"],
        ["experiment=demo", "head=ordinal"],
        ["experiment=demo", "head=regression", "loss.rank_weight=0.5"],
    ],
    ids=["rank", "ordinal", "regression+rank"],
)
def test_train_runs_with_tuned_cuts(overrides, tiny_demo, tmp_path, migrated_db):  # noqa: F811
    from iqs.models.checkpoints import load_checkpoint
    from iqs.train.pair_batches import WithinSourceBatchSampler

    seed_store(tmp_path, migrated_db)

    metrics, objs = run_train(shrink(tmp_path, *demo_sources(tiny_demo), *overrides))
    cfg, dm = objs["cfg"], objs["datamodule"]
    names = dm.dataset_names
    for ds in [*names, "all"]:
        for m in ("acc", "macro_f1", "balanced_acc"):
            assert np.isfinite(metrics[f"test/{ds}/{m}_tuned"])
    assert metrics["cuts/all/t1"] < metrics["cuts/all/t2"]
    assert all(f"cuts/{ds}/t1" in metrics for ds in names) == bool(cfg.decision_cuts.per_source)
    preds = pd.read_csv(objs["output_dir"] / "test_predictions.csv")
    assert set(preds["pred_class_tuned"].unique()) <= {0, 1, 2}
    ranking = cfg.head.name == "rank" or cfg.loss.rank_weight > 0
    assert isinstance(dm.train_dataloader().batch_sampler, WithinSourceBatchSampler) == ranking
    model = load_checkpoint(objs["best_checkpoint"])[0]
    assert model.meta["score_scale"] == {"rank": "latent", "ordinal": "class_index"}.get(
        cfg.head.name, "common"
    )
    if cfg.decision_cuts.bake:
        assert model.decision_cuts == (metrics["cuts/all/t1"], metrics["cuts/all/t2"])
    else:
        assert "decision_cuts" not in model.meta
        # the head's own classes reproduce the logged untuned metric
        from sklearn.metrics import f1_score

        assert f1_score(preds["label"], preds["pred_class"], average="macro") == pytest.approx(
            metrics["test/all/macro_f1"], abs=1e-6
        )
    assert torch.isfinite(torch.tensor(metrics["test/all/srcc"]))
