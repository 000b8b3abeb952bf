"""Balanced MSE, batch Monte-Carlo variant (Ren et al., CVPR 2022; jiawei-ren/BalancedMSE).

For a batch of predictions s_i and targets y_j, row i is a softmax classification over the batch's targets,
logits_ij = -(s_i - y_j)^2 / (2 sigma^2), with the right answer j = i. The targets seen in the batch stand in
for the training label distribution, so frequent scores stop dominating. The noise sigma is learnable; the
loss is multiplied by the detached 2 sigma^2 to keep an MSE-like scale (as in the reference code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bmc_loss(pred: torch.Tensor, target: torch.Tensor, noise_var: torch.Tensor) -> torch.Tensor:
    """Per-sample BMC loss, shape (N,); `pred` and `target` are (N,) on the same scale."""
    pred, target = pred.reshape(-1, 1), target.reshape(1, -1)
    if pred.shape[0] != target.shape[1]:
        raise ValueError(
            f"bmc_loss needs as many predictions as targets, got {pred.shape[0]} and {target.shape[1]}"
        )
    logits = -(pred - target).pow(2) / (2 * noise_var)
    diagonal = torch.arange(pred.shape[0], device=pred.device)
    return F.cross_entropy(logits, diagonal, reduction="none") * (2 * noise_var).detach()


class BalancedMSELoss(nn.Module):
    """BMC with a learnable noise sigma; returns per-sample losses (N,).

    `noise_sigma` is a parameter of whatever module owns this loss, so the optimizer trains it; the reference
    code gives it its own learning rate (`sigma_lr`), which an optimizer parameter group can mirror.
    """

    def __init__(self, init_noise_sigma: float = 1.0) -> None:
        super().__init__()
        if init_noise_sigma <= 0:
            raise ValueError(f"init_noise_sigma must be > 0, got {init_noise_sigma}")
        self.noise_sigma = nn.Parameter(torch.tensor(float(init_noise_sigma)))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return bmc_loss(pred, target, self.noise_sigma.pow(2))
