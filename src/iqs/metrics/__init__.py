"""Evaluation metrics: per source dataset and over all. Each metric is one record of
`iqs.metrics.registry` (definitions: the docstring of `iqs.metrics.grouped`).

Uncertainty: `iqs.metrics.bootstrap` (CIs over groups, paired run-vs-run differences, Fisher-z
intervals), the method per metric and group count in `iqs.metrics.interval_rule`, its evidence in
`iqs.metrics.coverage`. Labels of sources with their own thresholds: `iqs.metrics.label_rule`.
Names are imported on first use, so `iqs compare` (which needs no torch) starts without importing torch.
"""

from __future__ import annotations

from iqs.core.lazy import lazy_attributes

_WHERE = {
    "ALL": "names",
    "BINARY_THRESHOLD": "names",
    "HIGHER_IS_BETTER": "registry",
    "LABEL_METRICS": "registry",
    "METRIC_NAMES": "registry",
    "Metric": "registry",
    "all_metrics": "registry",
    "metric": "registry",
    "BootstrapCI": "bootstrap",
    "EvalRows": "bootstrap",
    "PairedResult": "bootstrap",
    "bootstrap_metrics": "bootstrap",
    "cluster_bootstrap_ci": "bootstrap",
    "fisher_z_ci": "bootstrap",
    "paired_bootstrap": "bootstrap",
    "interval_method": "interval_rule",
    "too_few_text": "interval_rule",
    "EarthMoversDistance": "emd",
    "emd_per_sample": "emd",
    "GroupedQualityMetrics": "grouped",
    "LabelRule": "label_rule",
    "LabelRuleError": "label_rule",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_attributes(__name__, _WHERE)
