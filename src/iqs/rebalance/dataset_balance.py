"""Balancing the sources of a mixture: each dataset gets draws in proportion to its `source_weight`."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from iqs.core.classes import NUM_CLASSES
from iqs.rebalance.base import (
    REBALANCERS,
    Rebalancer,
    require,
    validate_train_table,
)
from iqs.rebalance.weights import bin_counts, inverse_frequency, score_bin_index


@REBALANCERS.register("dataset_balance")
class DatasetBalanceRebalance(Rebalancer):
    """WeightedRandomSampler with P(row of source s) ∝ source_weight_s / count_s.

    With equal source weights a 255k-image AVA and a 10k-image KonIQ are drawn equally often. `within`
    optionally flattens scores or classes inside each source too (frequency^-alpha, as `sampler`),
    rescaled so that each source's total probability stays ∝ its source weight.
    """

    name = "dataset_balance"

    def __init__(
        self,
        within: Literal["bins", "classes"] | None = None,
        alpha: float = 1.0,
        n_bins: int = 10,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        require(
            within in (None, "bins", "classes"),
            self.name,
            f"within must be null, bins or classes, got {within!r}",
        )
        require(alpha >= 0, self.name, f"alpha must be >= 0, got {alpha}")
        require(int(n_bins) >= 2, self.name, f"n_bins must be >= 2, got {n_bins}")
        require(num_samples is None or int(num_samples) > 0, self.name, "num_samples must be > 0 or null")
        self.within = within
        self.alpha = float(alpha)
        self.n_bins = int(n_bins)
        self.num_samples = None if num_samples is None else int(num_samples)
        self.seed = int(seed)
        self.num_classes = NUM_CLASSES

    def prepare(self, train_df: pd.DataFrame, num_classes: int = NUM_CLASSES) -> None:
        validate_train_table(train_df, num_classes, columns=("dataset", "source_weight"))
        self.num_classes = num_classes

    def draw_weights(self, df: pd.DataFrame) -> np.ndarray:
        """Per row 1 / (its source's size), flattened `within` if asked: every source sums to 1.

        The base class's `sampler` multiplies by `source_weight`, so source s is drawn ∝ its weight."""
        validate_train_table(df, self.num_classes, columns=("dataset", "source_weight"))
        sources = df["dataset"].to_numpy()
        w = np.zeros(len(df))
        for s in pd.unique(sources):
            rows = np.flatnonzero(sources == s)
            within = self._within_weights(df.iloc[rows])
            w[rows] = within / within.sum()
        return w

    def row_weights(self, df: pd.DataFrame) -> np.ndarray:
        """Unnormalised draw weight per row, source weights included: source s sums to its weight."""
        w = self.draw_weights(df) * df["source_weight"].to_numpy(dtype=np.float64)
        if not (w > 0).any():
            raise RuntimeError("rebalance 'dataset_balance': every source has source_weight 0")
        return w

    def _within_weights(self, part: pd.DataFrame) -> np.ndarray:
        if self.within is None:
            return np.ones(len(part))
        if self.within == "bins":
            keys, n = score_bin_index(part["score"].to_numpy(), self.n_bins), self.n_bins
        else:
            keys, n = part["label"].to_numpy().astype(np.int64), self.num_classes
        return inverse_frequency(bin_counts(keys, n), self.alpha)[keys]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "within": self.within,
            "alpha": self.alpha,
            "n_bins": self.n_bins,
            "num_samples": self.num_samples,
            "seed": self.seed,
        }
