"""Ordinal head (CORAL, Cao, Mirjalili & Raschka 2020): bad < normal < good as two cumulative binary tasks.

Why CORAL and not CORN (Shi et al. 2023): CORAL scores every image with ONE latent value g(x) (a shared
weight vector) and learns one bias per cut, P(y > k) = sigmoid(g(x) + b_k). That single latent is what
this project needs around the head: a quality score to rank with (SRCC), a score to cut with learned
decision thresholds, and rank-consistent class probabilities by construction. CORN's conditional tasks
have their own weights, so there is no one latent score, and its extra freedom buys little for a linear
head over 3 classes.

Rank consistency: the paper's theorem only says the optimal biases are ordered; here b_1 = b_0 - softplus(r)
is ordered by construction, so P(y > 0) >= P(y > 1) holds for every input and the 3 class probabilities
P(bad) = 1 - p_0, P(normal) = p_0 - p_1, P(good) = p_1 are never negative. The loss itself is CORAL's
(the `coral-pytorch` package's `coral_loss`), with the paper's task importance weights lambda_k.

Outputs (the contract of every head): `score` = expected class index E[y] = p_0 + p_1 on 0..2 (monotone in
g, like the classification head's score); the class is CORAL's own rule, the number of tasks with
P(y > k) > 0.5, i.e. the latent g against the learned cuts -b_0 <= -b_1, and `logits3` =
sharpness * (-z_0, min(z_0, -z_1), z_1) with z_k = g + b_k (the form of `score_to_class_logits`), so that
argmax(logits3) is that class (ties to the lower class, as P > 0.5 is strict). `coral_probs` are the
class probabilities (1 - p_0, p_0 - p_1, p_1). Why not argmax of those: a narrow middle class rarely has the
largest probability; on the demo (experiments/2026-12-ordinal-vs-softmax-vs-score) that argmax never
predicted `normal` (f1_normal 0). `latent` = g(x) and `cum_logits` (N, 2) = z for the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from coral_pytorch.losses import coral_loss
from torch import nn

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


def cumulative_levels(label: torch.Tensor, num_classes: int = len(CLASS_NAMES)) -> torch.Tensor:
    """(N,) class indices -> (N, K-1) binary targets 1[y > k] (CORAL's extended binary labels)."""
    ks = torch.arange(num_classes - 1, device=label.device)
    return (label.long().unsqueeze(-1) > ks).to(torch.float32)


@dataclass(frozen=True)
class OrdinalOptions(HeadOptions):
    importance_weights: list[float] | None = None  # None or [lambda_(y>bad), lambda_(y>normal)]
    sharpness: float = 4.0  # slope of the class logits in the cumulative logits


@register_head("ordinal")
class OrdinalHead(Head):
    Options = OrdinalOptions
    options: OrdinalOptions
    score_scale = "class_index"

    def __init__(self, in_features: int, t1: float, t2: float, options: OrdinalOptions | None = None) -> None:
        super().__init__(in_features, t1, t2, options)
        n_cuts = len(CLASS_NAMES) - 1
        if n_cuts != 2:  # the ordered-bias parametrisation below is written for two cuts
            raise ValueError(f"the ordinal head expects 3 classes, got {CLASS_NAMES}")
        self.mlp = self.options_mlp(1)
        # CORAL: the latent's layer has no bias of its own; the cut biases carry the offsets. Initial cuts
        # as coral-pytorch's CoralLayer (b = 1, 0.5 for three classes): ordered and near zero.
        self.mlp[-1].bias = None
        self.bias_first = nn.Parameter(torch.tensor(1.0))
        # softplus(r) = 0.5 -> r = log(e^0.5 - 1)
        self.bias_gap_raw = nn.Parameter(torch.tensor(0.5).expm1().log())
        weights = self.options.importance_weights
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != n_cuts or min(weights) < 0:
                raise ValueError(f"importance_weights needs {n_cuts} non-negative values, got {weights}")
            weights = torch.tensor(weights)
        self.register_buffer("importance_weights", weights, persistent=False)

    def cut_biases(self) -> torch.Tensor:
        """(2,) b_0 >= b_1: P(y > k) = sigmoid(g + b_k)."""
        return torch.stack([self.bias_first, self.bias_first - F.softplus(self.bias_gap_raw)])

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        latent = self.mlp(features)  # (N, 1)
        b0, b1 = self.cut_biases().to(latent.dtype)
        if torch.onnx.is_in_onnx_export():
            # the cuts are fixed in an exported model: graph constants, so it needs no Softplus/Squeeze
            b0, b1 = float(b0), float(b1)
        # (N, 1) columns, -z as z * -1 and min(z0, -z1) as z0 - relu(z0 + z1): only operators that every
        # digiKam OpenCV loads (iqs.deploy.export.onnx_ops; see score_to_class_logits)
        z0, z1 = latent + b0, latent + b1
        logits3 = float(self.options.sharpness) * torch.cat([z0 * -1.0, z0 - torch.relu(z0 + z1), z1], dim=-1)
        cum_logits = torch.cat([z0, z1], dim=-1)
        p_above = torch.sigmoid(cum_logits)  # (N, 2): P(y > bad), P(y > normal)
        coral_probs = torch.stack([1 - p_above[:, 0], p_above[:, 0] - p_above[:, 1], p_above[:, 1]], dim=-1)
        return {
            # E[y] = sum_k P(y > k), as a product with ones: ReduceSum is not in every digiKam OpenCV
            "score": expectation(p_above, torch.ones(2)),
            "logits3": logits3,
            "probs": logits3.softmax(dim=-1),
            "coral_probs": coral_probs,
            "latent": latent.reshape(-1),
            "cum_logits": cum_logits,
        }

    def loss(self, outputs: Outputs, batch: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
        logits = outputs["cum_logits"]
        levels = cumulative_levels(batch["label"].to(logits.device)).to(logits.dtype)
        per_sample = coral_loss(logits, levels, importance_weights=self.importance_weights, reduction=None)
        return reduce_weighted(per_sample, weights)
