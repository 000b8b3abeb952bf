"""LightningModule: backbone -> head -> loss, grouped quality metrics, checkpoints with `iqs_meta`.

Batches come from `iqs.train.datamodule`: with `features` (cached embeddings of a frozen backbone) only
the head runs; with `image` the whole model does. The loss is the head's own (MSE/Huber/L1/BMC for
regression, EMD for distribution, cross-entropy for classification), reduced as mean(weight * loss)
with the rebalancer's per-sample weights from the batch.

Metrics: `<stage>/<dataset>/<metric>` and `<stage>/all/<metric>` for val and test, computed over the
whole epoch by `GroupedQualityMetrics` (correlations need every sample, not batch means).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torchmetrics import MeanMetric

from iqs.core.scale import CLASS_NAMES
from iqs.metrics import GroupedQualityMetrics, LabelRule
from iqs.models import QualityModel
from iqs.models.checkpoints import META_KEY


class QualityLitModule(pl.LightningModule):
    def __init__(
        self,
        model: QualityModel,
        dataset_names: Sequence[str],
        *,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        backbone_lr_scale: float = 0.1,
        rank_weight: float = 0.0,
        source_thresholds: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        super().__init__()
        # weight of the within-source fidelity loss added to the head's own (iqs.losses.fidelity)
        self.rank_weight = float(rank_weight)
        self.model = model
        self.dataset_names = [str(n) for n in dataset_names]
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.backbone_lr_scale = float(backbone_lr_scale)
        self.has_dist = bool(model.meta["has_dist"])
        # The classification head's score is an expected class index (0..2): rmse/binary_acc_5 do not apply.
        common = model.meta.get("score_scale", "common") == "common"
        # sources with their own threshold pair are scored on it, `all` on the model's (iqs.metrics.label_rule)
        rule = LabelRule(tuple(float(t) for t in model.meta["thresholds"]), dict(source_thresholds or {}))
        self.val_metrics = GroupedQualityMetrics(
            self.dataset_names, self.has_dist, common_scale_score=common, label_rule=rule
        )
        self.test_metrics = GroupedQualityMetrics(
            self.dataset_names, self.has_dist, common_scale_score=common, label_rule=rule
        )
        self.eval_loss = torch.nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})
        self._test_chunks: list[dict[str, torch.Tensor]] = []
        self.test_outputs: dict[str, np.ndarray] = {}
        self.test_results: dict[str, float] = {}
        self.confusion: dict[str, np.ndarray] = {}

    @property
    def meta(self) -> dict[str, Any]:
        return self.model.meta

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "features" in batch:
            return self.model.forward_head(batch["features"])
        return self.model(batch["image"])

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch)
        weight = batch.get("weight")
        loss = self.model.loss(out, batch, weight)
        if self.rank_weight:
            from iqs.losses.fidelity import batch_fidelity

            rank = batch_fidelity(out["score"], batch, weight)
            self.log(
                "train/rank_loss",
                rank,
                on_step=False,
                on_epoch=True,
                batch_size=len(batch["score"]),
                sync_dist=True,
            )
            loss = loss + self.rank_weight * rank
        # sync_dist: under DDP the mean over every rank's rows (a no-op in one process)
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(batch["score"]),
            sync_dist=True,
        )
        return loss

    def _eval_step(self, stage: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self(batch)
        loss = self.model.loss(out, batch, None)
        # a torchmetrics mean (summed over the ranks' rows under DDP): Lightning's own sync_dist mean divides
        # an integer row count by the world size, which is wrong when the ranks' shards differ in size
        self.eval_loss[stage].update(loss.detach(), weight=len(batch["score"]))
        self.log(f"{stage}/loss", self.eval_loss[stage], on_epoch=True, batch_size=len(batch["score"]))
        pred = self.model.predict(out)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(
            pred["score"].float(),
            batch["score"],
            pred["label"],
            batch["label"],
            batch["dataset_idx"],
            pred.get("dist"),
            batch["dist"] if self.has_dist else None,
        )
        return pred

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        pred = self._eval_step("test", batch)
        chunk = {
            "row": batch["row"],
            "score": pred["score"].float(),
            "label": pred["label"],
            "probs": pred["probs"],
        }
        if "dist" in pred:
            chunk["dist"] = pred["dist"].float()
        self._test_chunks.append({k: v.detach().cpu() for k, v in chunk.items()})

    def _log_epoch_metrics(self, stage: str, metrics: GroupedQualityMetrics) -> dict[str, float]:
        values = metrics.compute()
        logged = {f"{stage}/{k}": float(v) for k, v in values.items()}
        self.log_dict(logged, on_epoch=True, prog_bar=False)
        self.log(f"{stage}/srcc", logged[f"{stage}/all/srcc"], prog_bar=True)
        return logged

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val", self.val_metrics)
        self.val_metrics.reset()

    def on_test_epoch_start(self) -> None:
        self._test_chunks = []
        self.test_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_epoch_metrics("test", self.test_metrics)
        self.confusion = self.test_metrics.confusion_matrices()
        self.test_outputs = (
            {k: torch.cat([c[k] for c in self._test_chunks]).numpy() for k in self._test_chunks[0]}
            if self._test_chunks
            else {}
        )
        self._test_chunks = []
        self.test_metrics.reset()

    def configure_optimizers(self) -> Any:
        head = [
            p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("backbone.")
        ]
        body = [p for n, p in self.model.backbone.named_parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": head, "name": "head"}]
        optimizer = self.optimizer_factory(params=groups)
        if body:
            base_lr = optimizer.param_groups[0]["lr"]
            optimizer.add_param_group(
                {"params": body, "name": "backbone", "lr": base_lr * self.backbone_lr_scale}
            )
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What export and predict rebuild the model from, without ever guessing a preprocessing value.
        # A plain dict, and no save_hyperparameters(): the file must load with weights_only=True
        # (see iqs.models.checkpoints).
        checkpoint[META_KEY] = dict(self.model.meta)


def predictions_frame(table: pd.DataFrame, outputs: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per test image: dataset, image_id, path, true `score`/`label`, `pred_score`, `pred_class`
    (0 bad / 1 normal / 2 good), `prob_<class>`, and `pred_dist_1..10` for the distribution head."""
    if not outputs:
        return pd.DataFrame()
    rows = np.asarray(outputs["row"], dtype=np.int64)
    part = table.iloc[rows]
    df = pd.DataFrame(
        {
            "dataset": part["dataset"].to_numpy(),
            "image_id": part["image_id"].to_numpy(),
            "path": part["path"].to_numpy(),
            "score": part["score"].to_numpy(np.float64),
            "label": part["label"].to_numpy(np.int64),
            "pred_score": np.asarray(outputs["score"], dtype=np.float64),
            "pred_class": np.asarray(outputs["label"], dtype=np.int64),
        }
    )
    probs = np.asarray(outputs["probs"], dtype=np.float64)
    for i, name in enumerate(CLASS_NAMES):
        df[f"prob_{name}"] = probs[:, i]
    if "dist" in outputs:
        dist = np.asarray(outputs["dist"], dtype=np.float64)
        for i in range(dist.shape[1]):
            df[f"pred_dist_{i + 1}"] = dist[:, i]
    return df
