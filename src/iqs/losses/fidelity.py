"""Within-source pairwise ranking: the fidelity loss on Thurstone probabilities (UNIQUE, Zhang et al., TIP 2021).

For two images i, j of the SAME source, the model's probability that i is better than j is Thurstone's
p_hat = Phi((f_i - f_j) / sqrt(2)) (UNIQUE with its per-image uncertainty fixed at 1). The target is
p = Phi((mu_i - mu_j) / sqrt(s_i^2 + s_j^2)) from the labels' means and standard deviations (UNIQUE's
eq. 2) when the source has score distributions, else the hard order 1 / 0.5 / 0. The fidelity loss
1 - sqrt(p p_hat) - sqrt((1 - p)(1 - p_hat)) is averaged over the pairs.

Only differences within one source enter: the loss is blind to how each source was mapped onto the common
scale (any increasing affine map leaves p unchanged), so sources need no common scale. Pairs across
sources are never formed (`within_source_pairs`). Hand-rolled: no maintained library ships UNIQUE's loss;
the tests check it against a numpy transcription of the paper's formulas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from iqs.core.scale import BIN_CENTRES

# UNIQUE adds eps under the square roots: their derivative is infinite at 0 (p or p_hat at 0 or 1).
FIDELITY_EPS = 1e-8


def within_source_pairs(group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (i, j), i < j, of samples with the same `group` (source index)."""
    group = group.reshape(-1)
    same = group.unsqueeze(0) == group.unsqueeze(1)
    i, j = torch.triu_indices(len(group), len(group), offset=1, device=group.device)
    keep = same[i, j]
    return i[keep], j[keep]


def fidelity(p_hat: torch.Tensor, p: torch.Tensor, eps: float = FIDELITY_EPS) -> torch.Tensor:
    """Per-pair fidelity loss 1 - sqrt(p p_hat + eps) - sqrt((1 - p)(1 - p_hat) + eps)."""
    return 1.0 - torch.sqrt(p * p_hat + eps) - torch.sqrt((1.0 - p) * (1.0 - p_hat) + eps)


def dist_std(dist: torch.Tensor) -> torch.Tensor:
    """Standard deviation of (N, 10) common-scale score distributions (NaN rows stay NaN)."""
    centres = torch.tensor(BIN_CENTRES, dtype=dist.dtype, device=dist.device)
    mean = dist @ centres
    return torch.sqrt(torch.clamp(dist @ centres**2 - mean**2, min=0.0))


def pair_targets(
    score: torch.Tensor, std: torch.Tensor | None, i: torch.Tensor, j: torch.Tensor
) -> torch.Tensor:
    """P(i better than j): Phi(d / sqrt(s_i^2 + s_j^2)) where both stds are known and positive, else the order."""
    diff = (score[i] - score[j]).to(torch.float64)
    hard = (torch.sign(diff) + 1.0) / 2.0
    if std is None:
        return hard
    spread = torch.sqrt(std[i].double() ** 2 + std[j].double() ** 2)
    soft = torch.special.ndtr(diff / spread.clamp_min(1e-12))
    return torch.where(torch.isfinite(spread) & (spread > 0), soft, hard)


def within_source_fidelity(
    pred: torch.Tensor,
    target: torch.Tensor,
    group: torch.Tensor,
    target_std: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean fidelity loss over the within-source pairs of a batch (0, still differentiable, when none).

    `weights` (N,) are per-sample loss weights (rebalancing); a pair weighs the mean of its two samples'.
    """
    pred = pred.reshape(-1)
    i, j = within_source_pairs(group.to(pred.device))
    if len(i) == 0:
        return pred.sum() * 0.0
    p = pair_targets(target.reshape(-1).to(pred.device), target_std, i, j).to(pred.dtype)
    p_hat = torch.special.ndtr((pred[i] - pred[j]) / math.sqrt(2.0))
    per_pair = fidelity(p_hat, p)
    if weights is None:
        return per_pair.mean()
    w = weights.reshape(-1).to(pred.dtype)
    if w.shape != pred.shape:
        raise ValueError(f"sample weights of shape {tuple(w.shape)} for {pred.shape[0]} samples")
    return (per_pair * (w[i] + w[j]) / 2).mean()


def batch_fidelity(
    pred: torch.Tensor, batch: Mapping[str, torch.Tensor], weights: torch.Tensor | None = None
) -> torch.Tensor:
    """`within_source_fidelity` on a training batch: its `score`, `dataset_idx` and, when given, `dist`."""
    dist = batch.get("dist")
    std = None if dist is None else dist_std(dist.to(torch.float64))
    return within_source_fidelity(pred, batch["score"], batch["dataset_idx"], std, weights)
