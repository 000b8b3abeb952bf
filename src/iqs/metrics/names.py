"""The metric names and the facts about them that every consumer shares (no torch import here, so
`iqs compare` starts fast). Definitions: iqs.metrics.grouped."""

from __future__ import annotations

ALL = "all"  # the pooled evaluation set, next to the per-source datasets
METRIC_NAMES = (
    "plcc", "srcc", "krcc", "rmse", "emd", "acc", "f1_bad", "f1_normal", "f1_good", "macro_f1",
    "balanced_acc", "binary_acc_5",
)  # fmt: skip
HIGHER_IS_BETTER = {name: name not in ("rmse", "emd") for name in METRIC_NAMES}
CORRELATIONS = ("plcc", "srcc", "krcc")
BINARY_THRESHOLD = 5.0
# metrics whose value depends on the threshold pair (the labels); the others compare across pairs
LABEL_METRICS = ("acc", "f1_bad", "f1_normal", "f1_good", "macro_f1", "balanced_acc")
