"""3-class head: features -> logits for bad / normal / good, trained with cross-entropy.

Its continuous `score` is the expected class index, sum_c p_c * c, on 0..2 (not the 1..10 common scale):
correlation metrics (PLCC, SRCC, KRCC) use it; RMSE on the common scale does not apply to this head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from iqs.core.classes import CLASS_NAMES
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
class ClassificationOptions(HeadOptions):
    label_smoothing: float = 0.0
    class_weights: list[float] | None = None  # None or [bad, normal, good]


@register_head("classification")
class ClassificationHead(Head):
    Options = ClassificationOptions
    options: ClassificationOptions
    score_scale = "class_index"

    def __init__(
        self, in_features: int, t1: float, t2: float, options: ClassificationOptions | None = None
    ) -> None:
        super().__init__(in_features, t1, t2, options)
        n = len(CLASS_NAMES)
        self.mlp = self.options_mlp(n)
        smoothing = float(self.options.label_smoothing)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {smoothing}")
        weights = self.options.class_weights
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != n or min(weights) < 0:
                raise ValueError(
                    f"class_weights needs {n} non-negative values ({', '.join(CLASS_NAMES)}), got {weights}"
                )
            weights = torch.tensor(weights)
        # Not persistent: it is config, already recorded in the head's cfg.
        self.register_buffer("class_weights", weights, persistent=False)
        self.register_buffer("class_index", torch.arange(n, dtype=torch.float32), persistent=False)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        logits3 = self.mlp(features)
        probs = logits3.softmax(dim=-1)
        return {"score": expectation(probs, self.class_index), "logits3": logits3, "probs": probs}

    def loss(self, outputs: Outputs, batch: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
        # reduction="none" then a plain mean: class weights scale samples instead of renormalising the batch
        # (torch's weighted "mean" divides by the batch's summed class weights).
        per_sample = F.cross_entropy(
            outputs["logits3"],
            batch["label"].long(),
            weight=self.class_weights,
            label_smoothing=float(self.options.label_smoothing),
            reduction="none",
        )
        return reduce_weighted(per_sample, weights)
