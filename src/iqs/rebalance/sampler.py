"""Oversampling rare scores or classes with a WeightedRandomSampler (weights ∝ frequency^-alpha)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from iqs.core.classes import NUM_CLASSES
from iqs.rebalance.base import (
    REBALANCERS,
    Rebalancer,
    require,
    validate_train_table,
)
from iqs.rebalance.weights import Over, bin_counts, inverse_frequency, score_bin_index


class FrequencyWeighted(Rebalancer):
    """Shared fitting for strategies weighting a sample by the frequency of its score bin or class.

    `over="bins"`: `n_bins` equal bins over [0.5, 10.5] of the common scale (10 = the dist_1..dist_10 bins).
    `over="classes"`: the 3 threshold classes. Weight of a bin/class with count c is c^-alpha (empty ones 0),
    so with alpha=1 every non-empty bin carries the same total weight.
    """

    def __init__(self, alpha: float = 1.0, over: Over = "bins", n_bins: int = 10) -> None:
        require(alpha >= 0, self.name, f"alpha must be >= 0, got {alpha}")
        require(over in ("bins", "classes"), self.name, f"over must be 'bins' or 'classes', got {over!r}")
        require(int(n_bins) >= 2, self.name, f"n_bins must be >= 2, got {n_bins}")
        self.alpha = float(alpha)
        self.over = over
        self.n_bins = int(n_bins)
        self.counts: np.ndarray | None = None  # per bin/class, on the training table
        self.table: np.ndarray | None = None  # unnormalised weight per bin/class

    def prepare(self, train_df: pd.DataFrame, num_classes: int = NUM_CLASSES) -> None:
        validate_train_table(train_df, num_classes)
        self.num_classes = num_classes
        n = self.n_bins if self.over == "bins" else num_classes
        self.counts = bin_counts(self._keys(train_df["score"].to_numpy(), train_df["label"].to_numpy()), n)
        self.table = inverse_frequency(self.counts, self.alpha)

    def _keys(self, scores: Any, labels: Any) -> np.ndarray:
        if self.over == "bins":
            return score_bin_index(scores, self.n_bins)
        lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        return lab.astype(np.int64)

    def row_weights(self, df: pd.DataFrame) -> np.ndarray:
        """Unnormalised weight of every row of `df` (its bin's or class's c^-alpha)."""
        if self.table is None:
            raise RuntimeError(f"rebalance '{self.name}': call prepare(train_df) first")
        return self.table[self._keys(df["score"].to_numpy(), df["label"].to_numpy())]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "alpha": self.alpha, "over": self.over, "n_bins": self.n_bins}


@REBALANCERS.register("sampler")
class SamplerRebalance(FrequencyWeighted):
    """Draw training rows with replacement, P(row) ∝ frequency(bin or class)^-alpha.

    `num_samples` draws per epoch (None = len(train_df)); the generator is seeded, so the draws of
    successive epochs differ but a rerun repeats them.
    """

    name = "sampler"

    def __init__(
        self,
        alpha: float = 1.0,
        over: Over = "bins",
        n_bins: int = 10,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(alpha=alpha, over=over, n_bins=n_bins)
        require(num_samples is None or int(num_samples) > 0, self.name, "num_samples must be > 0 or null")
        self.num_samples = None if num_samples is None else int(num_samples)
        self.seed = int(seed)

    def draw_weights(self, train_df: pd.DataFrame) -> np.ndarray:
        w = self.row_weights(train_df)
        if not (w > 0).any():
            raise RuntimeError(f"rebalance '{self.name}': every row of the training table has weight 0")
        return w

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "num_samples": self.num_samples, "seed": self.seed}
