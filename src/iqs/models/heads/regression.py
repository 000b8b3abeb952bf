"""Regression head: features -> one score on the common scale [1, 10], classes through the thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from iqs.core.scale import COMMON_HI, COMMON_LO
from iqs.losses.regression_losses import REGRESSION_LOSSES, make_regression_loss
from iqs.models.heads.base import Batch, Head, HeadOptions, Outputs, reduce_weighted, register_head


@dataclass(frozen=True)
class RegressionOptions(HeadOptions):
    loss: str = "mse"  # mse | huber | l1 | balanced_mse (the rebalance strategy balanced_mse sets it)
    huber_delta: float = 1.0
    bmc_init_sigma: float = 1.0  # initial noise sigma of balanced_mse (learned), common scale
    init_score: float | None = None  # initial output bias; None = the middle of the common scale
    sharpness: float = 4.0  # slope of the class logits derived from the score


@register_head("regression")
class RegressionHead(Head):
    Options = RegressionOptions
    options: RegressionOptions
    regression_losses = tuple(REGRESSION_LOSSES.names())

    def __init__(
        self, in_features: int, t1: float, t2: float, options: RegressionOptions | None = None
    ) -> None:
        super().__init__(in_features, t1, t2, options)
        self.mlp = self.options_mlp(1)
        init = self.options.init_score
        init = (COMMON_LO + COMMON_HI) / 2 if init is None else float(init)
        # Starting at the data mean spares the first epochs from learning a constant offset.
        with torch.no_grad():
            self.mlp[-1].bias.fill_(init)
        name = str(self.options.loss)
        kwargs: dict[str, Any] = {}
        if name == "huber":
            kwargs["delta"] = float(self.options.huber_delta)
        elif name == "balanced_mse":
            kwargs["init_noise_sigma"] = float(self.options.bmc_init_sigma)
        self.loss_fn = make_regression_loss(name, **kwargs)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        score = self.mlp(features).reshape(-1)  # not squeeze: see `expectation`
        return self.score_outputs(score)

    def loss(self, outputs: Outputs, batch: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
        target = batch["score"].to(outputs["score"].dtype)
        return reduce_weighted(self.loss_fn(outputs["score"], target), weights)
