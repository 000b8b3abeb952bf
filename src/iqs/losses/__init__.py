"""Losses: EMD for distributions, per-sample regression losses (mse, huber, l1, balanced_mse)."""

from __future__ import annotations

from iqs.core.registry import import_submodules
from iqs.losses.balanced_mse import BalancedMSELoss, bmc_loss
from iqs.losses.emd import emd_loss
from iqs.losses.regression_losses import REGRESSION_LOSSES, make_regression_loss

import_submodules(__name__)  # a loss module registers itself in REGRESSION_LOSSES on import

__all__ = ["REGRESSION_LOSSES", "BalancedMSELoss", "bmc_loss", "emd_loss", "make_regression_loss"]
