"""Re-weighting the loss by frequency^-alpha of the sample's score bin or class (no change to sampling)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from iqs.core.classes import NUM_CLASSES
from iqs.rebalance.base import REBALANCERS
from iqs.rebalance.sampler import FrequencyWeighted
from iqs.rebalance.weights import lookup


@REBALANCERS.register("loss_weight")
class LossWeightRebalance(FrequencyWeighted):
    """Per-sample loss weights c^-alpha, scaled to mean 1 over the training table.

    The mean-1 scaling keeps the loss magnitude (and so the learning rate) comparable with `none`;
    with alpha=1 every non-empty bin/class contributes the same total weight to an epoch's loss.
    """

    name = "loss_weight"

    def prepare(self, train_df: pd.DataFrame, num_classes: int = NUM_CLASSES) -> None:
        super().prepare(train_df, num_classes)
        assert self.counts is not None and self.table is not None
        # mean over the training rows of table[key] is sum(counts * table) / N
        self.table = self.table * (len(train_df) / float(np.sum(self.counts * self.table)))

    def sample_weights(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            raise RuntimeError(f"rebalance '{self.name}': call prepare(train_df) first")
        return lookup(self.table, self._keys(scores, labels), scores)
