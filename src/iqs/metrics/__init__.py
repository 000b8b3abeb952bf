"""Evaluation metrics: per source dataset and over all (see `iqs.metrics.grouped` for the definitions)."""

from __future__ import annotations

from iqs.metrics.emd import EarthMoversDistance, emd_per_sample
from iqs.metrics.grouped import ALL, BINARY_THRESHOLD, HIGHER_IS_BETTER, METRIC_NAMES, GroupedQualityMetrics

__all__ = [
    "ALL",
    "BINARY_THRESHOLD",
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "EarthMoversDistance",
    "GroupedQualityMetrics",
    "emd_per_sample",
]
