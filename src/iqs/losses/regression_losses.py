"""Per-sample regression losses behind a registry: mse, huber, l1, balanced_mse.

Every loss maps (pred (N,), target (N,)) to per-sample values (N,), so callers can apply sample weights
(rebalancing, source weights) before reducing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iqs.core.registry import Registry
from iqs.losses.balanced_mse import BalancedMSELoss

REGRESSION_LOSSES: Registry[type[nn.Module]] = Registry("regression loss")


@REGRESSION_LOSSES.register("mse")
class MSELoss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target, reduction="none")


@REGRESSION_LOSSES.register("l1")
class L1Loss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(pred, target, reduction="none")


@REGRESSION_LOSSES.register("huber")
class HuberLoss(nn.Module):
    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        if delta <= 0:
            raise ValueError(f"huber delta must be > 0, got {delta}")
        self.delta = float(delta)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.huber_loss(pred, target, reduction="none", delta=self.delta)


REGRESSION_LOSSES.register("balanced_mse")(BalancedMSELoss)


def make_regression_loss(name: str, **kwargs: Any) -> nn.Module:
    """`make_regression_loss("huber", delta=0.5)`; unknown names and keyword arguments are errors."""
    cls = REGRESSION_LOSSES.get(name)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"regression loss '{name}' does not accept {sorted(kwargs)}: {err}") from err
