"""Evaluation metrics: per source dataset and over all (see `iqs.metrics.grouped` for the definitions).

Uncertainty: `iqs.metrics.bootstrap` (cluster-bootstrap CIs over groups, paired run-vs-run differences,
Fisher-z intervals). Labels of sources with their own thresholds: `iqs.metrics.label_rule`.
"""

from __future__ import annotations

from iqs.metrics.bootstrap import (
    BootstrapCI,
    EvalRows,
    PairedResult,
    bootstrap_metrics,
    cluster_bootstrap_ci,
    fisher_z_ci,
    paired_bootstrap,
)
from iqs.metrics.emd import EarthMoversDistance, emd_per_sample
from iqs.metrics.grouped import ALL, BINARY_THRESHOLD, HIGHER_IS_BETTER, METRIC_NAMES, GroupedQualityMetrics
from iqs.metrics.label_rule import LABEL_METRICS, LabelRule, LabelRuleError

__all__ = [
    "ALL",
    "BINARY_THRESHOLD",
    "HIGHER_IS_BETTER",
    "LABEL_METRICS",
    "METRIC_NAMES",
    "BootstrapCI",
    "EarthMoversDistance",
    "EvalRows",
    "GroupedQualityMetrics",
    "LabelRule",
    "LabelRuleError",
    "PairedResult",
    "bootstrap_metrics",
    "cluster_bootstrap_ci",
    "emd_per_sample",
    "fisher_z_ci",
    "paired_bootstrap",
]
