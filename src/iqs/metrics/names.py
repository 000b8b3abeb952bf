"""Names every consumer of the metrics shares. The metrics themselves, and the lists read off them
(METRIC_NAMES, HIGHER_IS_BETTER, CORRELATIONS, LABEL_METRICS), are iqs.metrics.registry's; they are
reachable here too. No torch import (`iqs compare` starts fast)."""

from __future__ import annotations

from iqs.metrics.registry import CORRELATIONS, HIGHER_IS_BETTER, LABEL_METRICS, METRIC_NAMES
from iqs.metrics.weighted import BINARY_THRESHOLD

__all__ = ["ALL", "BINARY_THRESHOLD", "CORRELATIONS", "HIGHER_IS_BETTER", "LABEL_METRICS", "METRIC_NAMES"]

ALL = "all"  # the pooled evaluation set, next to the per-source datasets
