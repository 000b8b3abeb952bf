"""The stages of one training run, in the order `iqs.train.pipeline.fit_and_test` calls them:
data -> model -> datamodule -> Lightning module -> feature cache -> trainer -> fit and test -> outputs.

Each stage takes what the previous ones built and logs what it decided into the run (tags, params,
artifacts). `run` is the open TrackedRun, or on DDP ranks > 0 its stand-in that logs nothing
(iqs.train.distributed.RankZeroOnlyRun).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from iqs.train import build
from iqs.train.options import (
    extraction_device,
    prepared_images,
    within_source_batches,
)

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from iqs.data.mixture import Mixture
    from iqs.models.quality_model import QualityModel
    from iqs.rebalance.base import Rebalancer
    from iqs.tracking.mlflow_run import TrackedRun
    from iqs.train.datamodule import QualityDataModule
    from iqs.train.features import CachedFeatures
    from iqs.train.module import QualityLitModule

log = logging.getLogger(__name__)


def build_data(cfg: DictConfig, mixture: Mixture | None = None) -> tuple[Mixture, Rebalancer]:
    """The labelled mixture (the demo data made first when the config asks for it; `mixture`: one built from
    this config already) and the rebalancer, checked against the head it will train."""
    from iqs.data.mixture import build_mixture, ensure_data

    if mixture is None:
        log.info("building mixture <%s>", cfg.data.name)
        ensure_data(cfg.data)
        mixture = build_mixture(cfg.data, cfg.thresholds)
    return mixture, build.rebalancer(cfg)


def build_model(cfg: DictConfig, rebalancer: Rebalancer) -> QualityModel:
    """A fresh backbone + head, or the model of one experiment=personal role (iqs.train.init_from)."""
    log.info("building model <%s + %s head>", cfg.backbone.name, cfg.head.name)
    return build.model(cfg, rebalancer)


def build_datamodule(
    cfg: DictConfig,
    run: TrackedRun,
    mixture: Mixture,
    rebalancer: Rebalancer,
    model: QualityModel,
    output_dir: Path,
) -> QualityDataModule:
    """The loaders over the mixture's readable rows; the run records the skipped rows and the data."""
    from iqs.core.preprocess import InputSpec
    from iqs.data.bad_images import BadImagePolicy, log_skipped

    datamodule = build.datamodule(
        cfg,
        mixture=mixture,
        spec=InputSpec.from_meta(model.meta),
        rebalancer=rebalancer,
        prepared=prepared_images(cfg, mixture),
        within_source_batches=within_source_batches(cfg),
        bad_images=BadImagePolicy.from_cfg(cfg),
    )
    log_skipped(run, datamodule.skipped, mixture.roots)  # metric data/<source>/skipped + the list
    run.log_mixture(datamodule.table, datamodule.fingerprint)
    run.set_tags({"missing_images": datamodule.n_missing, "output_dir": str(output_dir.resolve())})
    return datamodule


def build_lit_module(
    cfg: DictConfig, model: QualityModel, datamodule: QualityDataModule, mixture: Mixture
) -> QualityLitModule:
    return build.lit_module(
        cfg, model=model, dataset_names=datamodule.dataset_names, source_thresholds=mixture.source_thresholds
    )


def frozen_features(cfg: DictConfig, model: QualityModel, datamodule: QualityDataModule) -> CachedFeatures:
    """The frozen backbone's embeddings of the datamodule's rows, from the feature cache or computed.

    One place builds the cache key from the config, so anything else that reads a run's embeddings
    (e.g. an analysis script) gets the very entry the run trained on.
    """
    from iqs.core.preprocess import InputSpec
    from iqs.data.table import images_fingerprint
    from iqs.train.features import cached_features

    return cached_features(
        model.backbone,
        backbone_name=str(model.meta["backbone"]),
        weights=str(model.meta["weights"]),
        spec=InputSpec.from_meta(model.meta),
        paths=list(datamodule.paths),
        table_fingerprint=images_fingerprint(datamodule.table),
        cache_dir=Path(str(cfg.paths.cache_dir)),
        aug_views=int(cfg.cache.aug_views),
        aug=OmegaConf.to_container(cfg.augment, resolve=True),
        aug_seed=int(cfg.seed),
        dtype=str(cfg.cache.dtype),
        batch_size=int(cfg.cache.batch_size),
        num_workers=int(cfg.loader.num_workers),
        device=extraction_device(cfg),
    )


def attach_feature_cache(
    cfg: DictConfig, run: TrackedRun, model: QualityModel, datamodule: QualityDataModule
) -> str:
    """Serve a frozen backbone's cached embeddings instead of images; returns `off`, `hit` or `miss`."""
    cache_state = "off"
    if bool(cfg.cache.enabled) and model.backbone.frozen:
        features = frozen_features(cfg, model, datamodule)
        datamodule.attach_features(features)
        cache_state = "hit" if features.hit else "miss"
    run.set_tags({"feature_cache": cache_state})
    if not run.resumed:  # a param cannot change, and a resumed run may hit the cache its first part filled
        run.client.log_param(run.run_id, "feature_cache", cache_state)
    return cache_state


@dataclass
class Fitted:
    """What fit-then-test leaves: fit's metrics (val/..., the sweep objective) and the tested checkpoint."""

    metrics: dict[str, float]
    best: str | None


def fit_then_test(
    cfg: DictConfig,
    trainer: pl.Trainer,
    module: QualityLitModule,
    datamodule: QualityDataModule,
    checkpoint: ModelCheckpoint | None,
    resume_from: Path | None,
) -> Fitted:
    """`trainer.fit` (continuing `resume_from`), then `trainer.test` on the best checkpoint (`checkpoint`:
    the ModelCheckpoint callback, None when checkpoints are off)."""
    with warnings.catch_warnings():
        # cached features are tensors in memory: loader workers would only add overhead
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # a frozen backbone stays in eval mode on purpose (BN statistics must not move)
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        # trainer.test replaces callback_metrics with the test ones: keep fit's (val/...) for the return value
        fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if best and checkpoint.best_model_score is not None:
            # a sweep's objective is the monitored value of the checkpoint that was tested
            fit_metrics[str(cfg.monitor.metric)] = float(checkpoint.best_model_score)
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False)
    return Fitted(fit_metrics, best or None)


def write_test_outputs(
    cfg: DictConfig,
    run: TrackedRun,
    module: QualityLitModule,
    datamodule: QualityDataModule,
    mixture: Mixture,
    best: str | None,
    output_dir: Path,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Rank 0 after testing: predictions (plus val-tuned decision cuts), the run's test artifacts and the
    shortcut audit. Returns (predictions, test metrics)."""
    from iqs.data.audit import log_run_audit
    from iqs.report.artifacts import log_test_artifacts
    from iqs.train.decision_cuts import CutsConfig, tune_and_evaluate
    from iqs.train.module import predictions_frame

    predictions = predictions_frame(datamodule.table, module.test_outputs)
    test_results = dict(module.test_results)
    cuts_cfg = CutsConfig.from_cfg(cfg.get("decision_cuts"))
    if cuts_cfg.enabled:  # val-tuned class cuts on the predicted score (iqs.train.decision_cuts)
        _, tuned = tune_and_evaluate(cuts_cfg, module.model, datamodule, predictions, best)
        test_results.update(tuned)
    predictions.to_csv(output_dir / "test_predictions.csv", index=False, float_format="%.6g")
    thresholds = (float(cfg.thresholds.t1), float(cfg.thresholds.t2))
    log_test_artifacts(
        run,
        predictions,
        test_results,
        module.confusion,
        datamodule.table,
        thresholds,
        mixture.source_thresholds,
        cfg,
        best,
    )
    # shortcut audit (class x source composition, dataset-identity probe, within-source metrics)
    log_run_audit(run, datamodule, predictions, seed=int(cfg.seed))
    return predictions, test_results
