"""Earth Mover's Distance between 10-bin score distributions, as an accumulating torchmetrics Metric.

torchmetrics has no EMD between histograms (its Wasserstein-style metrics work on samples, not on
probabilities over ordered bins), so this is the closed form NIMA uses (Talebi & Milanfar 2018;
idealo/image-quality-assessment): per sample, EMD_r = (mean_k |CDF_p(k) - CDF_q(k)|^r)^(1/r) over the
K ordered bins, averaged over samples. Only a running sum and count are kept, so it syncs across
processes like any torchmetrics metric.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


def emd_per_sample(pred: torch.Tensor, target: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """(N, K) probabilities -> (N,) EMD_r between the rows (bins in ascending score order)."""
    diff = torch.cumsum(pred, dim=-1) - torch.cumsum(target, dim=-1)
    return diff.abs().pow(r).mean(dim=-1).pow(1.0 / r)


class EarthMoversDistance(Metric):
    is_differentiable = True
    higher_is_better = False
    full_state_update = False

    def __init__(self, r: float = 2.0, atol: float = 1e-3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.r = float(r)
        self.atol = float(atol)  # tolerance on each row summing to 1
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.ndim != 2 or preds.shape != target.shape:
            raise ValueError(
                f"EMD needs two (N, K) distributions of the same shape, got {tuple(preds.shape)} "
                f"and {tuple(target.shape)}"
            )
        preds, target = preds.detach().double(), target.detach().double()
        for name, d in (("predicted", preds), ("true", target)):
            off = (d.sum(dim=-1) - 1.0).abs() > self.atol
            if bool(off.any()):
                i = int(torch.nonzero(off)[0])
                raise ValueError(
                    f"EMD: {name} distribution row {i} sums to {float(d[i].sum()):.6f}, not 1 "
                    "(pass probabilities, e.g. softmax outputs, not logits)"
                )
        self.total += emd_per_sample(preds, target, self.r).sum()
        self.count += preds.shape[0]

    def compute(self) -> torch.Tensor:
        if int(self.count) == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.total / self.count
