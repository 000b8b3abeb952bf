"""Balanced MSE (Ren et al., "Balanced MSE for Imbalanced Visual Regression", CVPR 2022).

This strategy only selects the loss: the Batch Monte-Carlo (BMC) form lives in `iqs.losses.balanced_mse`
and is built by the LightningModule from `regression_loss` and `loss_params`. BMC rewrites the regression
likelihood against the batch's own targets, so it needs a scalar score prediction: the regression head.
"""

from __future__ import annotations

from typing import Any

from iqs.rebalance.base import REBALANCERS, RebalanceConfigError, Rebalancer, require


@REBALANCERS.register("balanced_mse")
class BalancedMseRebalance(Rebalancer):
    """`init_noise_sigma`: initial sigma of the (learnable) noise scale, in common-scale units."""

    name = "balanced_mse"
    regression_loss = "balanced_mse"

    def __init__(self, init_noise_sigma: float = 1.0) -> None:
        require(init_noise_sigma > 0, self.name, f"init_noise_sigma must be > 0, got {init_noise_sigma}")
        self.init_noise_sigma = float(init_noise_sigma)

    @property
    def loss_params(self) -> dict[str, Any]:
        return {"init_noise_sigma": self.init_noise_sigma}

    def check_head(self, head_name: str) -> None:
        from iqs.models.heads import HEADS

        # a head trait, not a name: any head whose scalar loss can be Balanced MSE
        if self.regression_loss not in HEADS.get(head_name).regression_losses:
            raise RebalanceConfigError(
                f"rebalance 'balanced_mse' replaces the regression loss and needs head=regression, "
                f"got head={head_name}; use rebalance=lds, loss_weight or sampler with this head"
            )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "init_noise_sigma": self.init_noise_sigma}
