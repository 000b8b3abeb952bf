"""Regression head: features -> one score on the common scale [1, 10], classes through the thresholds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from iqs.core.scale import COMMON_HI, COMMON_LO
from iqs.losses.regression_losses import REGRESSION_LOSSES, make_regression_loss
from iqs.models.heads.base import Batch, Head, Outputs, reduce_weighted, register_head


@register_head("regression")
class RegressionHead(Head):
    regression_losses = tuple(REGRESSION_LOSSES.names())

    def __init__(self, in_features: int, cfg: Mapping[str, Any] | None, t1: float, t2: float) -> None:
        super().__init__(in_features, cfg, t1, t2)
        self.mlp = self.cfg_mlp(1)
        init = self.cfg["init_score"]
        init = (COMMON_LO + COMMON_HI) / 2 if init is None else float(init)
        # Starting at the data mean spares the first epochs from learning a constant offset.
        with torch.no_grad():
            self.mlp[-1].bias.fill_(init)
        name = str(self.cfg["loss"])
        kwargs: dict[str, Any] = {}
        if name == "huber":
            kwargs["delta"] = float(self.cfg["huber_delta"])
        elif name == "balanced_mse":
            kwargs["init_noise_sigma"] = float(self.cfg["bmc_init_sigma"])
        self.loss_fn = make_regression_loss(name, **kwargs)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        score = self.mlp(features).reshape(-1)  # not squeeze: see `expectation`
        return self.score_outputs(score)

    def loss(self, outputs: Outputs, batch: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
        target = batch["score"].to(outputs["score"].dtype)
        return reduce_weighted(self.loss_fn(outputs["score"], target), weights)
