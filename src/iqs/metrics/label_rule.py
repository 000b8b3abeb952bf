"""One label rule for truth and prediction when a source brings its own threshold pair.

A mixture source may label its images with its own pair (`data.sources.<name>.thresholds`), while
the model predicts classes with the run's pair (`cfg.thresholds`: the head's cut, what digiKam gets).
Comparing the two would judge one cut against another. The rule:

- a source's own metrics (`test/<source>/acc`, F1, ...) use the source's pair on BOTH sides: its
  labels, and the predicted score cut at the same pair;
- `all` uses the run's declared pair on both sides: the true score cut at the declared pair, and the
  model's own predicted class;
- the classification head predicts classes directly, not a score on the common scale, so its
  prediction cannot be cut at another pair: a source override with that head is a ConfigError.

Score metrics (PLCC, SRCC, KRCC, RMSE, binary accuracy at 5) do not depend on the pair.
The predictions CSV carries both views (`label`/`pred_class_source` for the source,
`label_declared`/`pred_class` for `all`), so anything recomputed from it follows the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from iqs.core.scale import assign_labels
from iqs.metrics.names import ALL, LABEL_METRICS

__all__ = [
    "ALL",
    "DECLARED_LABEL",
    "LABEL_METRICS",
    "SOURCE_PRED",
    "LabelRule",
    "LabelRuleError",
    "class_columns",
]

# predictions-CSV columns the rule adds next to `label` (the source's pair) and `pred_class` (the model's)
DECLARED_LABEL = "label_declared"
SOURCE_PRED = "pred_class_source"


class LabelRuleError(ValueError):
    """A threshold override the head cannot follow (raised before training starts)."""


def pair_name(t1: float, t2: float) -> str:
    """`5_6`, `4.5_6.5`: the name of a threshold pair, from its values (tags, run names, groups)."""
    return f"{float(t1):g}_{float(t2):g}"


@dataclass(frozen=True)
class LabelRule:
    declared: tuple[float, float]
    per_source: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def pair(self, source: str) -> tuple[float, float]:
        t1, t2 = self.per_source.get(str(source), self.declared)
        return float(t1), float(t2)

    @property
    def overridden(self) -> list[str]:
        """Sources whose pair differs from the declared one."""
        d = (float(self.declared[0]), float(self.declared[1]))
        return sorted(s for s in self.per_source if self.pair(s) != d)

    @property
    def key(self) -> str:
        """`5_6`, or `5_6; demo_ava=4_7` with the overrides: runs share labels iff they share this key."""
        parts = [pair_name(*self.declared)]
        parts += [f"{s}={pair_name(*self.pair(s))}" for s in self.overridden]
        return "; ".join(parts)

    def check_head(self, score_on_common_scale: bool, head: str = "classification") -> None:
        if self.overridden and not score_on_common_scale:
            raise LabelRuleError(
                f"sources {self.overridden} set their own thresholds, but the {head} head predicts classes "
                f"under one pair ({pair_name(*self.declared)}) and has no common-scale score to cut at "
                "another pair. Use a regression or distribution head, or set "
                + ", ".join(f"data.sources.{s}.thresholds=null" for s in self.overridden)
            )

    def add_columns(self, predictions: pd.DataFrame) -> pd.DataFrame:
        """`label_declared` (truth at the declared pair) and `pred_class_source` (prediction at the source's pair).

        Rows of sources without an override keep `label` and `pred_class` as they are, so a run without
        overrides has both new columns equal to the old ones.
        """
        out = predictions.copy()
        out[DECLARED_LABEL] = out["label"].astype(np.int64)
        out[SOURCE_PRED] = out["pred_class"].astype(np.int64)
        for source in self.overridden:
            rows = out["dataset"].astype(str) == source
            if not rows.any():
                continue
            out.loc[rows, DECLARED_LABEL] = assign_labels(
                out.loc[rows, "score"].to_numpy(np.float64), *self.declared
            )
            out.loc[rows, SOURCE_PRED] = assign_labels(
                out.loc[rows, "pred_score"].to_numpy(np.float64), *self.pair(source)
            )
        return out


def class_columns(dataset: str, columns: Iterable[str]) -> tuple[str, str]:
    """(truth, prediction) columns of a predictions table for `dataset`'s class metrics under the rule.

    Tables written before the rule existed lack the two columns: then `label` and `pred_class`.
    """
    cols = set(columns)
    if dataset == ALL:
        return (DECLARED_LABEL if DECLARED_LABEL in cols else "label"), "pred_class"
    return "label", (SOURCE_PRED if SOURCE_PRED in cols else "pred_class")


def stars_for(score: np.ndarray, cuts: Sequence[float]) -> np.ndarray:
    """1 + the number of rating cuts strictly below each score (score <= cut 1 is one star)."""
    return 1 + (np.asarray(score, dtype=np.float64)[:, None] > np.asarray(cuts, np.float64)[None, :]).sum(1)
