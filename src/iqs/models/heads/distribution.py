"""Distribution head (NIMA): features -> softmax over the 10 common-scale bins, trained with EMD (r=2).

The score is the expectation over bins 1..10; classes come from that score through the thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iqs.core.scale import BIN_CENTRES, N_BINS
from iqs.losses.emd import emd_loss
from iqs.models.heads.base import (
    Batch,
    Head,
    HeadOptions,
    Outputs,
    expectation,
    reduce_weighted,
    register_head,
)


@dataclass(frozen=True)
class DistributionOptions(HeadOptions):
    dropout: float = 0.75  # NIMA's value
    emd_r: float = 2.0
    sharpness: float = 4.0


@register_head("distribution")
class DistributionHead(Head):
    Options = DistributionOptions
    options: DistributionOptions
    has_dist = True

    def __init__(
        self, in_features: int, t1: float, t2: float, options: DistributionOptions | None = None
    ) -> None:
        super().__init__(in_features, t1, t2, options)
        self.mlp = self.options_mlp(N_BINS)
        self.register_buffer("bin_centres", torch.tensor(BIN_CENTRES, dtype=torch.float32), persistent=False)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        bin_logits = self.mlp(features)
        dist = bin_logits.softmax(dim=-1)
        score = expectation(dist, self.bin_centres)
        logits3 = self.class_logits(score)
        return {
            "score": score,
            "dist": dist,
            "bin_logits": bin_logits,
            "logits3": logits3,
            "probs": logits3.softmax(dim=-1),
        }

    def loss(self, outputs: Outputs, batch: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
        target = batch["dist"].to(outputs["dist"].dtype)
        per_sample = emd_loss(outputs["dist"], target, r=float(self.options.emd_r), reduction="none")
        return reduce_weighted(per_sample, weights)
