"""Quality metrics per source dataset and over the whole evaluation set, accumulated over batches.

Definitions (README, "Models, heads and metrics"); each metric is a record of iqs.metrics.registry, whose
`streamed` field names the torchmetric that accumulates it here:

- plcc, srcc, krcc: Pearson, Spearman (ties get average ranks) and Kendall tau-b between predicted and true
  scores, the scipy.stats definitions. No logistic (or any other) fit is applied before PLCC, so PLCC
  measures plain linearity on the common scale. NaN when a group has fewer than 2 samples or when either
  side is constant (as scipy).
- rmse: root mean squared error on the common scale 1..10.
- emd: Earth Mover's Distance with r=2 between predicted and true 10-bin distributions (distribution
  head only; the key exists only when `has_dist=True`).
- acc: 3-class accuracy; f1_bad, f1_normal, f1_good: per-class F1; macro_f1: their unweighted mean over the
  classes that occur in the truth or the predictions (sklearn's default labels).
- balanced_acc: mean recall over the classes present in the truth (sklearn.metrics.balanced_accuracy_score).
- binary_acc_5: NIMA's binary accuracy at 5: a photo is "high quality" when its score is > 5 (strictly),
  for the truth and the prediction alike; the fraction of agreeing photos.

Scores must be on the common scale for rmse and binary_acc_5; for a head whose score is not (the
classification head's expected class index 0..2) pass `common_scale_score=False` and both are NaN.

Classes follow the label rule (iqs.metrics.label_rule) when a `label_rule` is given: a source with its
own threshold pair is scored on that pair (its labels vs its predicted scores cut at the pair), `all`
on the run's declared pair (true scores cut at it vs the model's classes).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.regression import KendallRankCorrCoef

from iqs.core.scale import CLASS_NAMES, assign_labels
from iqs.metrics.label_rule import LabelRule
from iqs.metrics.names import ALL, BINARY_THRESHOLD
from iqs.metrics.registry import (
    ABOVE_THRESHOLD,
    CLASSES,
    CONFUSION,
    CORRELATION,
    DISTRIBUTION,
    DISTRIBUTIONS,
    SCORES,
    Metric,
    all_metrics,
)

__all__ = ["ALL", "BINARY_THRESHOLD", "GroupedQualityMetrics"]


def _group_metrics(metrics: Sequence[Metric], num_classes: int, dtype: torch.dtype) -> nn.ModuleDict:
    """{inputs: MetricCollection({state: torchmetric})}: one torchmetric per `streamed.state`, plus the
    confusion matrix every group keeps (its sample count)."""
    made: dict[str, dict[str, nn.Module]] = {}
    with warnings.catch_warnings():
        # Spearman/Kendall keep every score (they need all ranks); evaluation sets fit easily
        warnings.filterwarnings("ignore", message=".*will save all targets and predictions.*")
        for s in [*(m.streamed for m in metrics), CONFUSION]:
            states = made.setdefault(s.inputs, {})
            if s.state not in states:
                states[s.state] = s.make(num_classes)
    parts = nn.ModuleDict({inputs: MetricCollection(states) for inputs, states in made.items()})
    if SCORES in parts:
        # float64 states: float32 running moments lose digits of PLCC on large test sets
        parts[SCORES].set_dtype(dtype)
    return parts


def _fill_empty_rank_states(group: nn.ModuleDict) -> None:
    """Before a multi-process sync: give Kendall's empty list states a (0, 1) piece.

    Under DDP each rank holds only its shard's rows and torchmetrics gathers the states in `compute()`.
    For a rank with no row of this group it gathers an empty 1-D tensor, while the other ranks hold
    Kendall's 2-D (n, 1) pieces: the ranks then exchange shapes of different lengths and the collective
    breaks (gloo aborts). Spearman's pieces are 1-D and need nothing.
    """
    for collection in group.values():
        for tm in collection.values(copy_state=False):
            if not isinstance(tm, KendallRankCorrCoef):
                continue
            for name in ("preds", "target"):
                state = getattr(tm, name)
                if isinstance(state, list) and not state:
                    state.append(torch.empty(0, 1, dtype=tm.dtype, device=tm.device))


def _confmat(group: nn.ModuleDict) -> torch.Tensor:
    with warnings.catch_warnings():
        # an empty group is expected (a source absent from a split): zeros, without torchmetrics' warning
        warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
        return group[CONFUSION.inputs][CONFUSION.state].compute()


class GroupedQualityMetrics(nn.Module):
    """One set of metrics per source dataset plus `all`; keys `<dataset>/<metric>` and `all/<metric>`.

    `update` takes a batch with `dataset_idx` (N,) indexing `dataset_names`. Move the module with the
    LightningModule (it is an nn.Module) and call `reset()` after `compute()` at each epoch end.
    `dtype` is that of the score metrics' states (float64; use float32 on backends without float64).
    """

    def __init__(
        self,
        dataset_names: Sequence[str],
        has_dist: bool = False,
        *,
        common_scale_score: bool = True,
        num_classes: int = len(CLASS_NAMES),
        class_names: Sequence[str] = CLASS_NAMES,
        dtype: torch.dtype = torch.float64,
        label_rule: LabelRule | None = None,
    ) -> None:
        super().__init__()
        names = [str(n) for n in dataset_names]
        if not names:
            raise ValueError("GroupedQualityMetrics needs at least one dataset name")
        if len(set(names)) != len(names) or ALL in names or any("/" in n for n in names):
            raise ValueError(f"dataset names must be unique, contain no '/' and not be '{ALL}': {names}")
        if len(class_names) != num_classes:
            raise ValueError(f"{num_classes} classes but class names {list(class_names)}")
        self.dataset_names = names
        self.has_dist = bool(has_dist)
        self.common_scale_score = bool(common_scale_score)
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names)
        self.dtype = dtype
        self.label_rule = label_rule
        # dataset index -> its own pair, for the sources whose pair differs from the declared one
        self._own_pairs: dict[int, tuple[float, float]] = {}
        if label_rule is not None:
            label_rule.check_head(self.common_scale_score)
            self._own_pairs = {
                names.index(s): label_rule.pair(s) for s in label_rule.overridden if s in names
            }
        # ModuleDict keys cannot hold every string a dataset may be called (e.g. '.'), hence positional keys
        self._keys = [f"ds{i}" for i in range(len(names))]
        # the registry's metrics this head has (EMD only with distributions)
        self.metrics = [m for m in all_metrics() if self.has_dist or m.kind != DISTRIBUTION]
        self.groups = nn.ModuleDict(
            {k: _group_metrics(self.metrics, num_classes, dtype) for k in [*self._keys, ALL]}
        )

    @property
    def group_names(self) -> list[str]:
        return [*self.dataset_names, ALL]

    @torch.no_grad()
    def update(
        self,
        pred_score: torch.Tensor,
        true_score: torch.Tensor,
        pred_class: torch.Tensor,
        true_class: torch.Tensor,
        dataset_idx: torch.Tensor,
        pred_dist: torch.Tensor | None = None,
        true_dist: torch.Tensor | None = None,
    ) -> None:
        """Add a batch. `pred_class` is (N,) class indices or (N, C) logits/probabilities (argmax taken)."""
        if pred_class.ndim == 2:
            pred_class = pred_class.argmax(dim=1)
        pred_score, true_score = pred_score.reshape(-1), true_score.reshape(-1)
        n = true_score.shape[0]
        tensors = {
            "pred_score": pred_score,
            "pred_class": pred_class,
            "true_class": true_class,
            "dataset_idx": dataset_idx,
        }
        for name, t in tensors.items():
            if t.reshape(-1).shape[0] != n:
                raise ValueError(f"{name} has {t.reshape(-1).shape[0]} values but true_score has {n}")
        if self.has_dist and (pred_dist is None or true_dist is None):
            raise ValueError("has_dist=True: pass pred_dist and true_dist (N, 10) to update()")
        dataset_idx = dataset_idx.reshape(-1).long()
        if n and (int(dataset_idx.min()) < 0 or int(dataset_idx.max()) >= len(self._keys)):
            raise ValueError(
                f"dataset_idx must index dataset_names {self.dataset_names}, "
                f"got values in [{int(dataset_idx.min())}, {int(dataset_idx.max())}]"
            )
        batch = (
            pred_score.to(self.dtype),
            true_score.to(self.dtype),
            pred_class.reshape(-1).long(),
            true_class.reshape(-1).long(),
            pred_dist,
            true_dist,
        )
        self._update_group(ALL, self._relabelled(batch, dataset_idx))
        for g in torch.unique(dataset_idx).tolist():
            mask = dataset_idx == g
            part = tuple(None if t is None else t[mask] for t in batch)
            if g in self._own_pairs:
                # the source's own pair on the prediction side too (the truth already uses it)
                cut = assign_labels(part[0].double().cpu().numpy(), *self._own_pairs[g])
                part = (part[0], part[1], torch.from_numpy(cut).to(part[2].device), *part[3:])
            self._update_group(self._keys[g], part)

    def _relabelled(self, batch: tuple, dataset_idx: torch.Tensor) -> tuple:
        """For `all`: the truth of overriding sources re-cut at the declared pair (the model predicts with it)."""
        if not self._own_pairs:
            return batch
        assert self.label_rule is not None
        true_class = batch[3].clone()
        for g in self._own_pairs:
            mask = dataset_idx == g
            if bool(mask.any()):
                cut = assign_labels(batch[1][mask].double().cpu().numpy(), *self.label_rule.declared)
                true_class[mask] = torch.from_numpy(cut).to(true_class.device)
        return (*batch[:3], true_class, *batch[4:])

    def _update_group(self, key: str, batch: tuple) -> None:
        ps, ts, pc, tc, pd_, td = batch
        if ts.shape[0] == 0:
            return
        inputs = {
            SCORES: (ps, ts),
            CLASSES: (pc, tc),
            ABOVE_THRESHOLD: ((ps > BINARY_THRESHOLD).long(), (ts > BINARY_THRESHOLD).long()),
            DISTRIBUTIONS: (pd_, td),
        }
        for name, collection in self.groups[key].items():
            collection.update(*inputs[name])

    def compute(self) -> dict[str, float]:
        """Every group's metrics. Under DDP torchmetrics syncs the states over the ranks here, so every
        rank must call `compute()` (and `confusion_matrices()`) in the same order, and gets the values of
        the whole evaluation set."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for group in self.groups.values():
                _fill_empty_rank_states(group)
        out: dict[str, float] = {}
        for name, key in zip(self.group_names, [*self._keys, ALL], strict=True):
            for metric, value in self._compute_group(self.groups[key]).items():
                out[f"{name}/{metric}"] = value
        return out

    def _compute_group(self, group: nn.ModuleDict) -> dict[str, float]:
        nan = float("nan")
        n = int(_confmat(group).sum())
        if n == 0:
            return dict.fromkeys((m.name for m in self.metrics), nan)
        computed: dict[tuple[str, str], object] = {}

        def value(m: Metric) -> float:
            s = m.streamed
            if (s.inputs, s.state) not in computed:
                computed[s.inputs, s.state] = group[s.inputs][s.state].compute()
            return s.read(computed[s.inputs, s.state])

        res: dict[str, float] = {}
        for m in self.metrics:
            if m.kind == CORRELATION and n < 2 or m.common_scale and not self.common_scale_score:
                res[m.name] = nan
            else:
                res[m.name] = value(m)
        correlations = [m.name for m in self.metrics if m.kind == CORRELATION]
        # a constant side: torchmetrics' PLCC (and Kendall) are NaN, its Spearman 0 where scipy gives NaN
        if any(math.isnan(res[k]) for k in correlations):
            res.update(dict.fromkeys(correlations, nan))
        return res

    def confusion_matrices(self) -> dict[str, np.ndarray]:
        """(C, C) integer counts per group, rows = true class, columns = predicted class (sklearn's layout)."""
        return {
            name: _confmat(self.groups[key]).cpu().numpy().astype(np.int64)
            for name, key in zip(self.group_names, [*self._keys, ALL], strict=True)
        }

    def sample_counts(self) -> dict[str, int]:
        return {name: int(cm.sum()) for name, cm in self.confusion_matrices().items()}

    def reset(self) -> None:
        for group in self.groups.values():
            for metric in group.values():
                metric.reset()
