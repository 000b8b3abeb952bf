"""The interface every rebalancing strategy speaks, and the checks they share.

Call order, by the training DataModule / LightningModule:

1. ``rb = build_rebalancer(name, **params)`` (conf/rebalance/<name>.yaml, instantiated by iqs.train.build); ``rb.check_head(cfg.head.name)`` (fails early on a bad pairing).
2. ``rb.prepare(train_df)`` on the training rows of the mixture (columns ``score`` on the common scale
   1..10, ``label`` 0/1/2, ``dataset``, ``source_weight``).
3. ``train_df = rb.filter_train(train_df)`` (undersampling strategies drop rows here; call before building
   the training Dataset).
4. ``sampler = rb.sampler(train_df)`` -> pass to the training DataLoader (``shuffle=False`` when not None).
   Strategies give their own draw weights through ``draw_weights``; ``sampler`` multiplies them by each
   row's ``source_weight`` (the mixture's per-source ``weight``), for every strategy: a source with
   weight 2 has each of its rows drawn twice as often as under the strategy alone. With no draw weights
   and equal source weights it returns None (a plain shuffled epoch).
5. In ``training_step``: ``w = rb.sample_weights(batch_score, batch_label)``; when not None, the loss is
   ``(w * per_sample_loss).mean()``.
6. ``rb.regression_loss`` names a loss that replaces the head's default loss (``"balanced_mse"``), with its
   parameters in ``rb.loss_params``.

Strategies are fitted once, on the training table only, and are deterministic given their ``seed``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from iqs.core.classes import NUM_CLASSES
from iqs.core.errors import DataError
from iqs.core.registry import Registry
from iqs.core.scale import COMMON_HI, COMMON_LO

REBALANCERS: Registry[type[Rebalancer]] = Registry("rebalance strategy")


class RebalanceConfigError(ValueError):
    """A rebalance config that cannot work (bad value, unknown key, or a strategy/head mismatch)."""


class Rebalancer:
    """No-op defaults; a strategy overrides only the hooks it acts through."""

    name: str = "base"
    regression_loss: str | None = None
    # draws per epoch and the sampler's seed; strategies that sample set them from their config
    num_samples: int | None = None
    seed: int = 0

    @property
    def loss_params(self) -> dict[str, Any]:
        """Keyword arguments for the loss named by `regression_loss` (empty when it is None)."""
        return {}

    def check_head(self, head_name: str) -> None:
        """Raise RebalanceConfigError when this strategy cannot be used with the head `head_name`."""

    def prepare(self, train_df: pd.DataFrame, num_classes: int = NUM_CLASSES) -> None:
        """Fit on the training table (histograms, counts); the base only validates it."""
        validate_train_table(train_df, num_classes)

    def filter_train(self, train_df: pd.DataFrame) -> pd.DataFrame:
        return train_df

    def draw_weights(self, train_df: pd.DataFrame) -> np.ndarray | None:
        """The strategy's own unnormalised draw weight per row, or None for uniform draws."""
        return None

    def sampler(self, train_df: pd.DataFrame) -> Sampler[int] | None:
        """Draws with P(row) ∝ draw_weights(row) * source_weight(row); None when both are uniform."""
        own = self.draw_weights(train_df)
        source = source_weights(train_df)
        if own is None and (source is None or np.all(source == source[0])):
            return None
        w = np.ones(len(train_df)) if own is None else np.asarray(own, dtype=np.float64)
        if source is not None:
            w = w * source
        if not (w > 0).any():
            raise RuntimeError(
                f"rebalance '{self.name}': every training row has draw weight 0 (source weights x strategy)"
            )
        return WeightedRandomSampler(
            torch.as_tensor(w, dtype=torch.float64),
            num_samples=self.num_samples or len(train_df),
            replacement=True,
            generator=seeded_generator(self.seed),
        )

    def sample_weights(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        return None

    def describe(self) -> dict[str, Any]:
        """Flat parameters for logging (MLflow params)."""
        return {"name": self.name}


def source_weights(df: pd.DataFrame) -> np.ndarray | None:
    """Each row's `source_weight` (None when the table has no such column, e.g. a single dataset)."""
    if "source_weight" not in df.columns:
        return None
    w = pd.to_numeric(df["source_weight"], errors="coerce").to_numpy(dtype=np.float64)
    _raise_first(df, ~np.isfinite(w) | (w < 0), "source_weight must be a finite number >= 0")
    return w


def require(cond: bool, strategy: str, message: str) -> None:
    if not cond:
        raise RebalanceConfigError(f"rebalance '{strategy}': {message}")


def validate_train_table(
    df: pd.DataFrame, num_classes: int = NUM_CLASSES, columns: tuple[str, ...] = ()
) -> None:
    """Fail on the first unusable row, naming its dataset and image_id (the table has no file of its own)."""
    needed = ("score", "label", *columns)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(f"training table lacks column(s) {missing}; it has {list(df.columns)}")
    if len(df) == 0:
        raise DataError("training table is empty: nothing to rebalance")
    score = pd.to_numeric(df["score"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(score) | (score < COMMON_LO) | (score > COMMON_HI)
    _raise_first(df, bad, f"score must be a finite number on the common scale [{COMMON_LO:g}, {COMMON_HI:g}]")
    label = pd.to_numeric(df["label"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(label, np.arange(num_classes))
    _raise_first(df, bad, f"label must be one of 0..{num_classes - 1}")
    if "source_weight" in columns:
        sw = pd.to_numeric(df["source_weight"], errors="coerce").to_numpy(dtype=np.float64)
        _raise_first(df, ~np.isfinite(sw) | (sw < 0), "source_weight must be a finite number >= 0")


def _raise_first(df: pd.DataFrame, bad: np.ndarray, message: str) -> None:
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    row = df.iloc[i]
    who = ", ".join(f"{c}={row[c]!r}" for c in ("dataset", "image_id", "score", "label") if c in df.columns)
    raise DataError(f"{message} ({who}; {int(bad.sum())} such row(s))", file="training table", row=i)


def seeded_generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen
