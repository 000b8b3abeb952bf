"""Undersampling: at most `cap` training rows per class (the old scripts balanced classes this way)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from iqs.core.classes import NUM_CLASSES
from iqs.rebalance.base import REBALANCERS, Rebalancer, require, validate_train_table


@REBALANCERS.register("class_cap")
class ClassCapRebalance(Rebalancer):
    """Keep a seeded random subset of at most `cap` rows of every class.

    `cap=None` uses the size of the smallest non-empty class, so every present class ends with the same
    count. Kept rows stay in their original order. Discarded rows are never seen: prefer `sampler` with
    `over: classes` when data is scarce.
    """

    name = "class_cap"

    def __init__(self, cap: int | None = None, seed: int = 0) -> None:
        require(cap is None or int(cap) > 0, self.name, f"cap must be a positive integer or null, got {cap}")
        self.cap = None if cap is None else int(cap)
        self.seed = int(seed)
        self.effective_cap: int | None = None

    def prepare(self, train_df: pd.DataFrame, num_classes: int = NUM_CLASSES) -> None:
        validate_train_table(train_df, num_classes)
        self.effective_cap = self._cap_for(train_df)

    def _cap_for(self, df: pd.DataFrame) -> int:
        if self.cap is not None:
            return self.cap
        return int(df["label"].value_counts().min())

    def filter_train(self, train_df: pd.DataFrame) -> pd.DataFrame:
        cap = self.effective_cap if self.effective_cap is not None else self._cap_for(train_df)
        rng = np.random.default_rng(self.seed)
        keep = np.zeros(len(train_df), dtype=bool)
        labels = train_df["label"].to_numpy()
        for c in np.unique(labels):
            pos = np.flatnonzero(labels == c)
            keep[pos if len(pos) <= cap else rng.choice(pos, size=cap, replace=False)] = True
        return train_df.iloc[np.flatnonzero(keep)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "cap": self.cap, "seed": self.seed}
