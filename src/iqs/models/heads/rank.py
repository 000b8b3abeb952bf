"""Rank head: one unscaled quality score per image, trained only to order images WITHIN each source.

The loss is UNIQUE's fidelity loss on within-source pairs (`iqs.losses.fidelity`), so the sources' common
scale mapping never enters training. The score has no scale of its own (`score_scale = "latent"`): SRCC and
KRCC apply, PLCC only up to a monotone map, RMSE not at all; the classes need cuts learned on validation
(`decision_cuts`, ideally `per_source=true`), since the label thresholds mean nothing on this scale.
Batches should hold several images of each source (`loss.within_source_batches`): pairs are formed only
inside a source.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iqs.losses.fidelity import batch_fidelity
from iqs.models.heads.base import Batch, Head, HeadOptions, Outputs, register_head


@dataclass(frozen=True)
class RankOptions(HeadOptions):
    sharpness: float = 4.0  # slope of the class logits derived from the score


@register_head("rank")
class RankHead(Head):
    Options = RankOptions
    options: RankOptions
    score_scale = "latent"
    pairwise = True

    def __init__(self, in_features: int, t1: float, t2: float, options: RankOptions | None = None) -> None:
        super().__init__(in_features, t1, t2, options)
        self.mlp = self.options_mlp(1)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        score = self.mlp(features).reshape(-1)  # not squeeze: OpenCV 4.6 cannot import Squeeze-13
        # Until decision cuts replace them, the label thresholds class this unscaled score arbitrarily.
        return self.score_outputs(score)

    def loss(self, outputs: Outputs, batch: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
        return batch_fidelity(outputs["score"], batch, weights)
