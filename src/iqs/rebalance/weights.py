"""Frequency-based weights over score bins or classes, shared by the sampler, loss and LDS strategies.

Score bins are equal-width over [0.5, 10.5]: with 10 bins they are centred on the common-scale integers
1..10, the same bins as ``dist_1..dist_10``; finer bins (e.g. 100, 0.1 wide) refine the same grid.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.ndimage import convolve1d, gaussian_filter1d
from scipy.signal.windows import triang

from iqs.core.scale import COMMON_HI, COMMON_LO

BINS_LO, BINS_HI = COMMON_LO - 0.5, COMMON_HI + 0.5
Over = Literal["bins", "classes"]
LdsKernel = Literal["gaussian", "triang", "laplace"]


def score_bin_index(scores: np.ndarray | torch.Tensor, n_bins: int) -> np.ndarray:
    """Bin of each common-scale score among `n_bins` equal bins over [0.5, 10.5] (ends clipped)."""
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    width = (BINS_HI - BINS_LO) / n_bins
    return np.clip(np.floor((s.astype(np.float64) - BINS_LO) / width), 0, n_bins - 1).astype(np.int64)


def bin_counts(index: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(np.asarray(index, dtype=np.int64), minlength=n).astype(np.float64)


def inverse_frequency(counts: np.ndarray, alpha: float) -> np.ndarray:
    """counts^-alpha per bin; empty bins get weight 0 (no sample ever looks them up, and 0 keeps
    a WeightedRandomSampler from drawing nothing there). alpha=1 is inverse, 0.5 square-root inverse."""
    counts = np.asarray(counts, dtype=np.float64)
    w = np.zeros_like(counts)
    nz = counts > 0
    w[nz] = counts[nz] ** (-float(alpha))
    return w


def lds_kernel_window(kernel: LdsKernel, ks: int, sigma: float) -> np.ndarray:
    """Symmetric smoothing window with peak 1, as in Yang et al. 2021 (YyzHarry/imbalanced-regression)."""
    if ks < 1 or ks % 2 == 0:
        raise ValueError(f"LDS kernel size must be a positive odd number, got {ks}")
    half = (ks - 1) // 2
    if kernel == "gaussian":
        delta = np.zeros(ks)
        delta[half] = 1.0
        win = gaussian_filter1d(delta, sigma=sigma)
    elif kernel == "triang":
        win = triang(ks)
    elif kernel == "laplace":
        x = np.arange(-half, half + 1, dtype=np.float64)
        win = np.exp(-np.abs(x) / sigma) / (2.0 * sigma)
    else:
        raise ValueError(f"unknown LDS kernel '{kernel}' (gaussian, triang, laplace)")
    return win / win.max()


def lds_smooth(counts: np.ndarray, kernel: LdsKernel, ks: int, sigma: float) -> np.ndarray:
    """Effective label density: the empirical histogram convolved with the kernel (zero outside the range)."""
    window = lds_kernel_window(kernel, ks, sigma)
    return convolve1d(np.asarray(counts, dtype=np.float64), weights=window, mode="constant")


def lookup(table: np.ndarray, index: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Per-sample values table[index] as a float32 tensor on `like`'s device."""
    return torch.as_tensor(table[index], dtype=torch.float32, device=like.device)
