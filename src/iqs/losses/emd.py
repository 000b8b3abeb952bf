"""Earth Mover's Distance between histograms over ordered bins (NIMA; idealo/image-quality-assessment).

Per sample, EMD_r = (mean_k |CDF_p(k) - CDF_q(k)|^r)^(1/r). NIMA trains with r=2. With r=1 it is the
1-Wasserstein distance over bins 1..K divided by K (bin spacing 1).
"""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "sum", "none")


def _safe_root(x: torch.Tensor, r: float) -> torch.Tensor:
    # x**(1/r) has an infinite slope at 0 (identical histograms); give it a zero gradient there instead of NaN.
    positive = x > 0
    return torch.where(
        positive, torch.where(positive, x, torch.ones_like(x)).pow(1.0 / r), torch.zeros_like(x)
    )


def emd_loss(p: torch.Tensor, q: torch.Tensor, r: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    """EMD between rows of `p` and `q` (N, K), both probability histograms over the same ordered bins."""
    if p.shape != q.shape or p.dim() != 2:
        raise ValueError(
            f"emd_loss needs two (N, K) tensors of the same shape, got {tuple(p.shape)} and {tuple(q.shape)}"
        )
    if r < 1:
        raise ValueError(f"emd_loss needs r >= 1, got {r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction '{reduction}'; use one of {', '.join(REDUCTIONS)}")
    cdf_diff = torch.cumsum(p, dim=1) - torch.cumsum(q, dim=1)
    per_sample = _safe_root(cdf_diff.abs().pow(r).mean(dim=1), r)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample
