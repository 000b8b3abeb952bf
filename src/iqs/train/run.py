"""`iqs train`: one training run (or a sweep with `-m`), tracked in MLflow.

    iqs train experiment=demo
    iqs train -m experiment=demo head=regression,distribution rebalance=none,sampler

`train(cfg)` reads top to bottom: mixture -> datamodule -> model -> (feature cache) -> callbacks ->
logger -> trainer -> fit -> test -> artifacts. Every job writes only into its own output folder
(Hydra's `runtime.output_dir`: `outputs/train/<time>_<8 random hex>/` for a run,
`multirun/train/<time>_<hex>/<job>/` in a sweep, so jobs started in the same second never share one);
the jobs of one sweep share the MLflow tag `sweep_id` (iqs.tracking). `resume=<run id | checkpoint |
auto>` continues a run in its own folder and MLflow run (iqs.train.resume).

Outcomes: SIGTERM/SIGINT end the run KILLED and `main` returns 128 + signal (iqs.train.signals); a
configuration or data error prints one line (its traceback goes to the job's log file and the run's
`traceback.txt`) and returns 1; any other error propagates with its traceback.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from iqs.config import conf_dir, job_suffix
from iqs.train.launchers import register_resolvers

log = logging.getLogger(__name__)
register_resolvers()  # before Hydra composes: conf/hparams_search/ presets use them

TABLE_METRICS = ("plcc", "srcc", "acc", "macro_f1", "f1_bad", "f1_normal", "f1_good", "rmse")


def job_output_dir(cfg: DictConfig) -> Path:
    """`cfg.output_dir`, else Hydra's per-job folder, else a fresh `outputs/train/<time>` (plain compose)."""
    explicit = cfg.get("output_dir")
    if explicit:
        out = Path(str(explicit))
    else:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            out = Path(HydraConfig.get().runtime.output_dir)
        else:
            out = (
                Path(str(cfg.paths.root_dir))
                / "outputs"
                / "train"
                / f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{job_suffix()}"
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


def untrained(cfg: DictConfig) -> bool:
    """Whether the trainer settings would test a model that never takes an optimizer step."""
    t = cfg.trainer
    limit = t.get("limit_train_batches")
    return t.get("max_epochs") == 0 or t.get("max_steps") == 0 or (limit is not None and float(limit) == 0)


def check_trained(cfg: DictConfig) -> None:
    """Refuse to test an untrained model unless `allow_untrained=true` (then the run is tagged `untrained`)."""
    from iqs.data.mixture import ConfigError

    if untrained(cfg) and not cfg.get("allow_untrained", False):
        raise ConfigError(
            "these trainer settings (max_epochs=0, max_steps=0 or limit_train_batches=0) would test an "
            "untrained model; give the run some training, or add allow_untrained=true to test one on purpose"
        )


def model_config(cfg: DictConfig, rebalancer: Any) -> DictConfig:
    """backbone/head/thresholds for `build_quality_model`; a rebalancer that swaps the loss (balanced_mse) sets it."""
    model_cfg = OmegaConf.create(
        OmegaConf.to_container(OmegaConf.masked_copy(cfg, ["backbone", "head", "thresholds"]), resolve=True)
    )
    if rebalancer.regression_loss:
        with open_dict(model_cfg):
            model_cfg.head.loss = rebalancer.regression_loss
            if "init_noise_sigma" in rebalancer.loss_params:
                model_cfg.head.bmc_init_sigma = rebalancer.loss_params["init_noise_sigma"]
    return model_cfg


def rank_weight(cfg: DictConfig) -> float:
    """`loss.rank_weight`: the within-source fidelity loss added to a score head's own loss."""
    weight = float((cfg.get("loss") or {}).get("rank_weight", 0.0))
    if weight < 0:
        raise ValueError(f"loss.rank_weight must be >= 0, got {weight}")
    if weight and str(cfg.head.name) == "rank":
        raise ValueError("head=rank is trained on the ranking loss alone; leave loss.rank_weight at 0")
    return weight


def within_source_batches(cfg: DictConfig) -> dict[str, Any] | None:
    """WithinSourceBatchSampler kwargs when the run trains on within-source pairs (None = plain shuffle).

    `loss.within_source_batches`: auto (on for head=rank or rank_weight > 0) | true | false.
    """
    loss = cfg.get("loss") or {}
    mode = str(loss.get("within_source_batches", "auto")).lower()
    if mode not in ("auto", "true", "false"):
        raise ValueError(f"loss.within_source_batches must be auto, true or false, got {mode!r}")
    ranking = str(cfg.head.name) == "rank" or rank_weight(cfg) > 0
    if mode == "false" or (mode == "auto" and not ranking):
        return None
    return {"sources_per_batch": loss.get("sources_per_batch")}


def extraction_device(cfg: DictConfig) -> str:
    """Embed on the GPU when the trainer will use one (the trainer itself only starts at `fit`)."""
    import torch

    wants_gpu = str(cfg.trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
    return "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"


def prepared_images(cfg: DictConfig, mixture: Any) -> dict[str, Any]:
    """The sources that `iqs data prepare` has decoded already (shards are only read, never built here)."""
    from iqs.data.prepare import PreparedImages, source_dir
    from iqs.data.shard_format import ShardFormat

    p = cfg.get("prepare") or {}
    if not p.get("use", True):
        return {}
    fmt = ShardFormat.from_cfg(p)
    found = {}
    for name, root in mixture.roots.items():
        folder = source_dir(cfg.paths.cache_dir, name, root, int(p.get("short_side", 320)), fmt)
        if folder.is_dir():
            found[name] = PreparedImages(folder)
            log.info("reading %s from %d prepared %s images in %s", name, len(found[name]), fmt.name, folder)
    return found


def frozen_features(cfg: DictConfig, model: Any, datamodule: Any) -> Any:
    """The frozen backbone's embeddings of the datamodule's rows, from the feature cache or computed.

    One place builds the cache key from the config, so anything else that reads a run's embeddings
    (e.g. an analysis script) gets the very entry the run trained on.
    """
    from iqs.data.table import images_fingerprint
    from iqs.deploy.preprocess import InputSpec
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


def make_callbacks(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    from pytorch_lightning.callbacks import (
        EarlyStopping,
        LearningRateMonitor,
        ModelCheckpoint,
        RichProgressBar,
    )

    monitor, mode = str(cfg.monitor.metric), str(cfg.monitor.mode)
    callbacks: dict[str, Any] = {"lr": LearningRateMonitor(logging_interval="epoch")}
    if cfg.callbacks.checkpoint.enabled:
        callbacks["checkpoint"] = ModelCheckpoint(
            dirpath=output_dir / "checkpoints",
            # metric names hold '/', which would make sub-folders: the epoch alone names the file
            filename="best-epoch{epoch:03d}",
            auto_insert_metric_name=False,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            save_last=bool(cfg.callbacks.checkpoint.save_last),
        )
    es = cfg.callbacks.early_stopping
    if es.enabled:
        callbacks["early_stopping"] = EarlyStopping(
            monitor=monitor,
            mode=mode,
            patience=int(es.patience),
            min_delta=float(es.min_delta),
            # a NaN correlation (constant predictions early on) is a bad epoch, not a reason to stop
            check_finite=False,
        )
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks["progress"] = RichProgressBar(leave=True)
    return callbacks


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train and test one configuration; returns (metrics, objects) like lightning-hydra-template.

    The MLflow run opens first, so a bad dataset root or config fails a recorded run (FAILED, traceback).
    """
    import pytorch_lightning as pl
    import torch

    from iqs.tracking.cv import cv_tags
    from iqs.train.distributed import is_global_zero, rank_zero_tracked_run, uses_replay, write_replay_config
    from iqs.train.launchers import threads_per_job
    from iqs.train.resume import prepare

    check_trained(cfg)
    if cfg.get("init_from"):  # experiment=personal: general vs personal vs scratch, three runs
        from iqs.train.personal import train_personal

        return train_personal(cfg)
    started = time.perf_counter()
    pl.seed_everything(int(cfg.seed), workers=True)
    threads = threads_per_job(cfg)  # num_threads=, or this job's share of the cores in a parallel sweep
    if threads:
        torch.set_num_threads(threads)
    # marks this host's dead runs KILLED and finds the run to continue; DDP ranks > 0 never touch the store
    target = prepare(cfg) if is_global_zero() else None
    output_dir = target.output_dir if target else job_output_dir(cfg)
    checkpoint = target.checkpoint if target else cfg.get("resume_checkpoint")
    # trainer=ddp/ddp_cpu: the other ranks start from this job's config (iqs.train.distributed)
    if uses_replay(cfg):
        write_replay_config(cfg, output_dir, checkpoint)
    # the folds of one cross-validated configuration share a cv_id (iqs compare cv=<id> pools them)
    tags = {**cv_tags(cfg), **{str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}}
    tags["torch_threads"] = str(torch.get_num_threads())
    if untrained(cfg):
        tags["untrained"] = "true"
    # ranks > 0 of a DDP run get a stand-in that logs nothing: rank 0 owns the MLflow run
    with rank_zero_tracked_run(cfg, tags=tags, resume_run_id=target.run_id if target else None) as run:
        metrics, objects = fit_and_test(cfg, run, output_dir, checkpoint)
        run.log_metrics({"time/total_s": time.perf_counter() - started})
    return metrics, objects


def trainer_plugins() -> list[Any]:
    """Atomic checkpoint writes, and Lightning's SLURM auto-requeue under SLURM (iqs.train.signals)."""
    from iqs.train.checkpoint_io import AtomicCheckpointIO
    from iqs.train.signals import cluster_plugins

    return [AtomicCheckpointIO(), *cluster_plugins()]


def fit_and_test(
    cfg: DictConfig, run: Any, output_dir: Path, resume_from: Path | None = None
) -> tuple[dict[str, float], dict[str, Any]]:
    """mixture -> datamodule -> model -> feature cache -> callbacks -> logger -> trainer -> fit -> test.

    `resume_from`: a checkpoint of this run to continue from (iqs.train.resume)."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from iqs.data.bad_images import BadImagePolicy, log_skipped
    from iqs.data.mixture import build_mixture, ensure_data
    from iqs.deploy.preprocess import InputSpec
    from iqs.models import build_quality_model
    from iqs.rebalance import build_rebalancer
    from iqs.tracking import make_lightning_logger
    from iqs.train.datamodule import QualityDataModule
    from iqs.train.decision_cuts import CutsConfig, tune_and_evaluate
    from iqs.train.module import QualityLitModule, predictions_frame
    from iqs.train.resume import ResumeState

    log.info("building mixture <%s>", cfg.data.name)
    ensure_data(cfg.data)
    mixture = build_mixture(cfg.data, cfg.thresholds)
    rebalancer = build_rebalancer(cfg.rebalance)
    rebalancer.check_head(str(cfg.head.name))

    log.info("building model <%s + %s head>", cfg.backbone.name, cfg.head.name)
    if cfg.get("init_from"):  # the model of one experiment=personal role (iqs.train.init_from)
        from iqs.train.init_from import initial_model

        model = initial_model(cfg)
    else:
        model = build_quality_model(model_config(cfg, rebalancer))
    spec = InputSpec.from_meta(model.meta)

    datamodule = QualityDataModule(
        mixture,
        spec,
        rebalancer,
        batch_size=int(cfg.loader.batch_size),
        eval_batch_size=cfg.loader.get("eval_batch_size"),
        num_workers=int(cfg.loader.num_workers),
        augment=OmegaConf.to_container(cfg.augment, resolve=True),
        seed=int(cfg.seed),
        prepared=prepared_images(cfg, mixture),
        within_source_batches=within_source_batches(cfg),
        bad_images=BadImagePolicy.from_cfg(cfg),
    )
    log_skipped(run, datamodule.skipped, mixture.roots)  # metric data/<source>/skipped + the list
    run.log_mixture(datamodule.table, datamodule.fingerprint)
    run.set_tags({"missing_images": datamodule.n_missing, "output_dir": str(output_dir.resolve())})

    module = QualityLitModule(
        model,
        datamodule.dataset_names,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        backbone_lr_scale=float(cfg.backbone_lr_scale),
        rank_weight=rank_weight(cfg),
        source_thresholds=mixture.source_thresholds,
    )

    cache_state = "off"
    if bool(cfg.cache.enabled) and model.backbone.frozen:
        features = frozen_features(cfg, model, datamodule)
        datamodule.attach_features(features)
        cache_state = "hit" if features.hit else "miss"
    run.set_tags({"feature_cache": cache_state})
    if not run.resumed:  # a param cannot change, and a resumed run may hit the cache its first part filled
        run.client.log_param(run.run_id, "feature_cache", cache_state)

    callbacks = make_callbacks(cfg, output_dir)
    callbacks["resume"] = ResumeState(run.run_id)
    logger = make_lightning_logger(run, log_model=bool(cfg.logger.get("log_model", False)))
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=list(callbacks.values()),
        logger=logger,
        default_root_dir=str(output_dir),
        plugins=trainer_plugins(),
    )
    with warnings.catch_warnings():
        # cached features are tensors in memory: loader workers would only add overhead
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # a frozen backbone stays in eval mode on purpose (BN statistics must not move)
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        # trainer.test replaces callback_metrics with the test ones: keep fit's (val/...) for the return value
        fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best = callbacks["checkpoint"].best_model_path if "checkpoint" in callbacks else ""
        if best and callbacks["checkpoint"].best_model_score is not None:
            # a sweep's objective is the monitored value of the checkpoint that was tested
            fit_metrics[str(cfg.monitor.metric)] = float(callbacks["checkpoint"].best_model_score)
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False)
    from iqs.train.distributed import finish

    if not finish(trainer, module):  # DDP ranks > 0 stop here; rank 0 holds every test prediction
        return dict(module.test_results), {"datamodule": datamodule, "run_id": None, "trainer": trainer}

    predictions = predictions_frame(datamodule.table, module.test_outputs)
    test_results = dict(module.test_results)
    cuts_cfg = CutsConfig.from_cfg(cfg.get("decision_cuts"))
    if cuts_cfg.enabled:  # val-tuned class cuts on the predicted score (iqs.train.decision_cuts)
        _, tuned = tune_and_evaluate(cuts_cfg, module.model, datamodule, predictions, best or None)
        test_results.update(tuned)
    predictions.to_csv(output_dir / "test_predictions.csv", index=False, float_format="%.6g")
    thresholds = (float(cfg.thresholds.t1), float(cfg.thresholds.t2))
    run.log_test_artifacts(
        predictions, test_results, module.confusion, datamodule.table, thresholds, cfg, best or None
    )
    # shortcut audit (class x source composition, dataset-identity probe, within-source metrics)
    from iqs.data.audit import log_run_audit

    log_run_audit(run, datamodule, predictions, seed=int(cfg.seed))

    metrics = {**fit_metrics, **{k: float(v) for k, v in trainer.callback_metrics.items()}}
    metrics.update(test_results)
    objects = {
        "cfg": cfg,
        "mixture": mixture,
        "datamodule": datamodule,
        "model": module,
        "trainer": trainer,
        "callbacks": callbacks,
        "run_id": run.run_id,
        "sweep_id": run.sweep_id,
        "output_dir": output_dir,
        "best_checkpoint": best or None,
        "predictions": predictions,
        "feature_cache": cache_state,
    }
    return metrics, objects


def monitored_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    value = metrics.get(str(cfg.monitor.metric))
    return None if value is None else float(value)


def print_test_table(metrics: dict[str, float], dataset_names: list[str], title: str) -> None:
    """Rows: each source dataset and `all`; columns: the headline test metrics."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("dataset", no_wrap=True)
    for m in TABLE_METRICS:
        table.add_column(m, justify="right")
    for ds in [*dataset_names, "all"]:
        cells = []
        for m in TABLE_METRICS:
            v = metrics.get(f"test/{ds}/{m}")
            cells.append("-" if v is None or math.isnan(v) else f"{v:.3f}")
        table.add_row(ds, *cells, style="bold" if ds == "all" else None)
    # piped output (make, CI) defaults to 80 columns, which would truncate the dataset names
    console = Console(width=max(Console().width, 112))
    console.print(table)
    console.print("Browse and compare runs: [bold]make ui[/bold] (MLflow UI) or [bold]iqs compare[/bold]")


@hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
def hydra_entry(cfg: DictConfig) -> float | None:
    """The Hydra task: returns the monitored metric (what a sweeper such as Optuna optimises).

    A configuration or data error is reported in one line (iqs.train.user_errors) and the job returns None,
    so the other jobs of a sweep still run; `main` then exits 1.
    """
    from iqs.tracking.mlflow_run import thresholds_name
    from iqs.train.user_errors import USER_ERRORS, report

    try:
        metrics, objects = train(cfg)
    except USER_ERRORS as exc:
        report(exc)
        return None
    title = f"{cfg.head.name} head, rebalance={cfg.rebalance.name}, thresholds {thresholds_name(cfg)}"
    if untrained(cfg):
        title = f"UNTRAINED model (allow_untrained=true): {title}"
    print_test_table(
        metrics,
        objects["datamodule"].dataset_names,
        f"test metrics: {title} (MLflow run {objects['run_id']})",
    )
    return monitored_value(cfg, metrics)


def main(argv: list[str] | None = None) -> int:
    """`iqs train [overrides]`: Hydra parses `argv` as its own command line (so -m, --cfg job, ... work).

    Returns the process exit status: 0, 1 when a job failed on a configuration or data error, 128 + the
    signal number when SIGTERM or SIGINT stopped it. The monitored metric is the Hydra task's return value.
    """
    from iqs.train import user_errors
    from iqs.train.signals import Interrupted, signals_raise

    argv = list(sys.argv[1:] if argv is None else argv)
    saved = sys.argv
    sys.argv = ["iqs-train", *argv]
    user_errors.reported.clear()
    try:
        with signals_raise():
            hydra_entry()
    except Interrupted as exc:
        print(f"iqs train: {exc}; the MLflow run ended KILLED", file=sys.stderr)
        return exc.exit_code
    finally:
        sys.argv = saved
    return 1 if user_errors.reported else 0
