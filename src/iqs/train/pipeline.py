"""One job's pipeline, stage by stage (iqs.train.stages), inside a run that the caller opened:
`iqs train` (iqs.train.run) for one configuration, iqs.train.personal for each of its three roles."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from iqs.core.config import job_suffix

if TYPE_CHECKING:
    from iqs.data.mixture import Mixture
    from iqs.tracking.mlflow_run import TrackedRun


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


def fit_and_test(
    cfg: DictConfig,
    run: TrackedRun,
    output_dir: Path,
    resume_from: Path | None = None,
    mixture: Mixture | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """data -> model -> datamodule -> module -> feature cache -> trainer -> fit -> test -> outputs
    (iqs.train.stages). `resume_from`: a checkpoint of this run to continue from (iqs.train.resume);
    `mixture`: the one this config's data builds, when the caller has it already (iqs.train.personal)."""
    from iqs.train import stages
    from iqs.train.distributed import finish
    from iqs.train.trainer_setup import build_trainer

    mixture, rebalancer = stages.build_data(cfg, mixture)
    model = stages.build_model(cfg, rebalancer)
    datamodule = stages.build_datamodule(cfg, run, mixture, rebalancer, model, output_dir)
    module = stages.build_lit_module(cfg, model, datamodule, mixture)
    cache_state = stages.attach_feature_cache(cfg, run, model, datamodule)
    trainer, callbacks = build_trainer(cfg, run, output_dir)
    fitted = stages.fit_then_test(cfg, trainer, module, datamodule, callbacks.get("checkpoint"), resume_from)
    if not finish(trainer, module):  # DDP ranks > 0 stop here; rank 0 holds every test prediction
        return dict(module.test_results), {"datamodule": datamodule, "run_id": None, "trainer": trainer}

    predictions, test_results = stages.write_test_outputs(
        cfg, run, module, datamodule, mixture, fitted.best, output_dir
    )
    metrics = {**fitted.metrics, **{k: float(v) for k, v in trainer.callback_metrics.items()}}
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
        "best_checkpoint": fitted.best,
        "predictions": predictions,
        "feature_cache": cache_state,
    }
    return metrics, objects
