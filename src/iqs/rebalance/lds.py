"""Label distribution smoothing (Yang et al., "Delving into Deep Imbalanced Regression", ICML 2021).

Scores are continuous, so neighbouring fine bins share information: the empirical histogram of training
scores is convolved with a symmetric kernel (the effective label density), and each sample's loss weight
is that smoothed density at its bin to the power -alpha. Follows YyzHarry/imbalanced-regression
(`get_lds_kernel_window`, `convolve1d(..., mode="constant")`, weights scaled to mean 1 over the training set).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from iqs.core.classes import NUM_CLASSES
from iqs.rebalance.base import REBALANCERS, Rebalancer, require, validate_train_table
from iqs.rebalance.weights import BINS_HI, BINS_LO, LdsKernel, bin_counts, lds_smooth, lookup, score_bin_index


@REBALANCERS.register("lds")
class LdsRebalance(Rebalancer):
    """Per-sample loss weights 1 / smoothed_density(bin)^alpha, mean 1 over the training table.

    `bin_width` (common-scale units, 0.1 by default) must divide the 10-wide bin range [0.5, 10.5].
    `sqrt_counts` takes the square root of the histogram before smoothing, the reference's `sqrt_inv`.
    """

    name = "lds"

    def __init__(
        self,
        bin_width: float = 0.1,
        kernel: LdsKernel = "gaussian",
        ks: int = 5,
        sigma: float = 2.0,
        alpha: float = 1.0,
        sqrt_counts: bool = False,
    ) -> None:
        n_bins = (BINS_HI - BINS_LO) / float(bin_width)
        require(
            bin_width > 0 and abs(n_bins - round(n_bins)) < 1e-6,
            self.name,
            f"bin_width must divide {BINS_HI - BINS_LO:g} evenly, got {bin_width}",
        )
        require(
            kernel in ("gaussian", "triang", "laplace"),
            self.name,
            f"kernel must be gaussian, triang or laplace, got {kernel!r}",
        )
        require(int(ks) >= 1 and int(ks) % 2 == 1, self.name, f"ks must be a positive odd integer, got {ks}")
        require(sigma > 0, self.name, f"sigma must be > 0, got {sigma}")
        require(alpha >= 0, self.name, f"alpha must be >= 0, got {alpha}")
        self.bin_width = float(bin_width)
        self.n_bins = int(round(n_bins))
        self.kernel: LdsKernel = kernel
        self.ks = int(ks)
        self.sigma = float(sigma)
        self.alpha = float(alpha)
        self.sqrt_counts = bool(sqrt_counts)
        self.counts: np.ndarray | None = None  # raw histogram of training scores
        self.smoothed: np.ndarray | None = None  # effective label density
        self.table: np.ndarray | None = None  # weight per fine bin (mean 1 over the training rows)

    def prepare(self, train_df: pd.DataFrame, num_classes: int = NUM_CLASSES) -> None:
        validate_train_table(train_df, num_classes)
        idx = score_bin_index(train_df["score"].to_numpy(), self.n_bins)
        self.counts = bin_counts(idx, self.n_bins)
        hist = np.sqrt(self.counts) if self.sqrt_counts else self.counts
        self.smoothed = lds_smooth(hist, self.kernel, self.ks, self.sigma)
        table = np.zeros(self.n_bins)
        # a populated bin always has smoothed > 0 (the window's centre is 1); others are never looked up
        pos = self.smoothed > 0
        table[pos] = self.smoothed[pos] ** (-self.alpha)
        self.table = table * (len(idx) / float(np.sum(table[idx])))

    def sample_weights(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            raise RuntimeError("rebalance 'lds': call prepare(train_df) first")
        return lookup(self.table, score_bin_index(scores, self.n_bins), scores)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bin_width": self.bin_width,
            "kernel": self.kernel,
            "ks": self.ks,
            "sigma": self.sigma,
            "alpha": self.alpha,
            "sqrt_counts": self.sqrt_counts,
        }
