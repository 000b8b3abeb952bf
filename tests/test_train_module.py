"""QualityLitModule pieces that need no Trainer: optimiser groups, the checkpoint record, predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from iqs.core.config import compose
from iqs.data.table import DIST_COLUMNS
from iqs.models import build_quality_model
from iqs.models.checkpoints import load_checkpoint
from iqs.train import build
from iqs.train.module import QualityLitModule, predictions_frame


def lit_module(*overrides: str, scale: float = 0.1) -> QualityLitModule:
    """The module `iqs train` builds (iqs.train.build.lit_module) for a 64 px model of `overrides`."""
    cfg = compose("train", ["backbone.input_size=64", f"backbone_lr_scale={scale}", *overrides])
    model = build_quality_model(cfg, pretrained=False)
    return build.lit_module(cfg, model=model, dataset_names=["a", "b"], source_thresholds={})


@pytest.mark.slow
def test_the_module_takes_the_keys_a_user_sets() -> None:
    """conf/train.yaml's `module` node points at the optimizer, scheduler, backbone_lr_scale and
    loss.rank_weight: an override of those reaches the built module, and a run logs each value once, under the
    key that was set (a value set in the node itself is a param of its own)."""
    from iqs.tracking.config_view import flatten_config
    from iqs.tracking.mlflow_run import params_config

    lit = lit_module("optimizer.lr=0.02", "scheduler=null", "loss.rank_weight=0.5", scale=0.25)
    assert lit.backbone_lr_scale == 0.25 and lit.rank_weight == 0.5 and lit.scheduler_factory is None
    assert lit.optimizer_factory(torch.nn.Linear(1, 1).parameters()).defaults["lr"] == 0.02
    assert lit.dataset_names == ["a", "b"]

    cfg = compose("train", ["loader.batch_size=5", "augment.hflip=0", "seed=7"])
    datamodule = build.instantiate_node(cfg.datamodule)  # the partial awaiting the mixture and the rest
    assert datamodule.keywords == {
        "batch_size": 5,
        "eval_batch_size": 64,
        "num_workers": 0,
        "augment": {"crop": 0.05, "hflip": 0},
        "seed": 7,
    }
    params = flatten_config(params_config(cfg))
    assert params["loader.batch_size"] == "5"
    assert not any(k.startswith(("datamodule.", "module.")) for k in params)
    direct = flatten_config(params_config(compose("train", ["module.backbone_lr_scale=0.5"])))
    assert direct["module.backbone_lr_scale"] == "0.5" and direct["backbone_lr_scale"] == "0.1"


@pytest.mark.slow
def test_frozen_backbone_optimises_the_head_only():
    lit = lit_module("backbone.freeze=true", "head=regression")
    conf = lit.configure_optimizers()
    groups = conf["optimizer"].param_groups
    assert [g["name"] for g in groups] == ["head"]
    head_params = {id(p) for p in lit.model.head.parameters()}
    assert {id(p) for p in groups[0]["params"]} == head_params
    assert isinstance(conf["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)


def test_fine_tuned_backbone_learns_at_a_scaled_rate():
    lit = lit_module("backbone.freeze=false", "head=distribution", "optimizer.lr=0.01", scale=0.25)
    groups = lit.configure_optimizers()["optimizer"].param_groups
    assert [g["name"] for g in groups] == ["head", "backbone"]
    assert groups[0]["lr"] == pytest.approx(0.01) and groups[1]["lr"] == pytest.approx(0.0025)
    n_body = sum(p.numel() for p in lit.model.backbone.parameters())
    assert sum(p.numel() for p in groups[1]["params"]) == n_body


def test_training_step_on_features_weights_the_loss():
    lit = lit_module("head=regression", "head.dropout=0.0")
    lit.log = lambda *a, **k: None  # no Trainer here
    n, d = 6, int(lit.model.meta["num_features"])
    batch = {
        "features": torch.randn(n, d),
        "score": torch.linspace(2, 9, n),
        "label": torch.tensor([0, 0, 1, 1, 2, 2]),
        "weight": torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
        "dist": torch.full((n, 10), 0.1),
    }
    loss = lit.training_step(batch, 0)
    pred = lit.model.forward_head(batch["features"])["score"].detach()
    expected = ((pred - batch["score"]) ** 2 * batch["weight"]).mean()
    torch.testing.assert_close(loss.detach(), expected)


@pytest.mark.slow
def test_checkpoint_record_round_trips_with_weights_only(tmp_path):
    lit = lit_module("head=classification", "thresholds=t4.5_6.5")
    ckpt: dict = {"state_dict": lit.state_dict()}
    lit.on_save_checkpoint(ckpt)
    assert ckpt["iqs_meta"]["thresholds"] == [4.5, 6.5] and ckpt["iqs_meta"]["head"] == "classification"
    torch.save(ckpt, tmp_path / "m.ckpt")
    model, _ = load_checkpoint(tmp_path / "m.ckpt")
    x = torch.randn(2, 3, 64, 64)
    lit.model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(model(x)["logits3"], lit.model(x)["logits3"])


def test_predictions_frame_maps_rows_back_to_images():
    table = pd.DataFrame(
        {"dataset": ["a", "a", "b"], "image_id": ["1", "2", "3"], "path": ["x/1.jpg", "x/2.jpg", "y/3.jpg"]}
    )
    table["score"], table["label"] = [3.0, 5.5, 8.0], [0, 1, 2]
    table[DIST_COLUMNS] = 0.1
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    out = {"row": np.array([2, 0]), "score": np.array([7.5, 4.0]), "label": np.array([2, 0]), "probs": probs}
    df = predictions_frame(table, out)
    assert df["image_id"].tolist() == ["3", "1"] and df["score"].tolist() == [8.0, 3.0]
    assert df["pred_class"].tolist() == [2, 0] and df["prob_bad"].tolist() == [0.7, 0.1]
    from iqs.report.artifacts import check_predictions

    check_predictions(df)  # the columns the tracking artifacts expect
