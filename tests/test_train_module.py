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
from iqs.train.module import QualityLitModule, predictions_frame


def lit_module(*overrides: str, scale: float = 0.1) -> QualityLitModule:
    cfg = compose("train", ["backbone.input_size=64", *overrides])
    from hydra.utils import instantiate

    model = build_quality_model(cfg, pretrained=False)
    return QualityLitModule(
        model,
        ["a", "b"],
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
        backbone_lr_scale=scale,
    )


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
