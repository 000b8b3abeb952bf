"""`iqs train ... resume=<run id | checkpoint | auto>`: continue a run from its last checkpoint, in the same
MLflow run.

Lightning's `trainer.fit(ckpt_path=...)` restores the weights, optimizer, scheduler, epoch and step
counters and the callbacks (best checkpoint, early stopping). Two things it leaves out are saved here
so a resumed run draws exactly the batches and dropout masks an uninterrupted one would: the global RNG
states (torch, numpy, Python, CUDA; `ResumeState`, checkpoint key `iqs_resume`) and the training
loader's sampler state (the loader's and sampler's `torch.Generator`s, and the epoch counter of a
sampler that keeps its own). Everything is stored as tensors and plain containers, so checkpoints
still load with `weights_only=True` (iqs.models.checkpoints).

Which checkpoint: a run id -> `<its output_dir tag>/checkpoints/last.ckpt` (or a newer Lightning HPC
checkpoint `hpc_ckpt_<n>.ckpt` in that folder, written on SLURM pre-emption); a path -> that file, whose
`iqs_resume` record names its run; `auto` -> the newest unfinished (RUNNING, KILLED, FAILED) run with
this config's run name and params that has such a checkpoint and whose process is not alive. Under SLURM
a requeued job (SLURM_RESTART_COUNT > 0) resumes `auto` among the runs of its own SLURM job.
The resumed job keeps writing into the run's own output folder, so checkpoints stay in one place.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from iqs.data.mixture import ConfigError

log = logging.getLogger(__name__)

RESUME_KEY = "iqs_resume"
LAST = "last.ckpt"


@dataclass(frozen=True)
class ResumeTarget:
    run_id: str
    checkpoint: Path
    output_dir: Path


# ---------------------------------------------------------------- state Lightning does not save


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain values (numpy's key array as an int64 tensor)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _sampling_parts(loader: Any) -> dict[str, Any]:
    """The loader and the samplers in it that may hold a generator or an epoch counter, by role.

    Under DDP (iqs.train.distributed) the drawing samplers sit one level down: Lightning's
    `DistributedSamplerWrapper` keeps the weighted sampler at `.dataset._sampler` (a private attribute of
    lightning_fabric's `_DatasetSamplerWrapper`; no public accessor exists), and `ShardedBatchSampler`
    keeps the within-source batch sampler at `.batches`."""
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    parts = {
        "loader": loader,
        "sampler": sampler,
        "sampler.dataset._sampler": getattr(getattr(sampler, "dataset", None), "_sampler", None),
        "batch_sampler": batch_sampler,
        "batch_sampler.sampler": getattr(batch_sampler, "sampler", None),
        "batch_sampler.batches": getattr(batch_sampler, "batches", None),
    }
    return {role: obj for role, obj in parts.items() if obj is not None}


def sampler_state(loader: Any) -> dict[str, dict[str, Any]]:
    """Per part of the loader: its generator's state and, for samplers that count epochs themselves
    (no `set_epoch`, which Lightning would call), the counter."""
    state: dict[str, dict[str, Any]] = {}
    for role, obj in _sampling_parts(loader).items():
        entry: dict[str, Any] = {}
        gen = getattr(obj, "generator", None)
        if isinstance(gen, torch.Generator):
            entry["generator"] = gen.get_state()
        epoch = getattr(obj, "epoch", None)
        if isinstance(epoch, int) and not hasattr(obj, "set_epoch"):
            entry["epoch"] = epoch
        if entry:
            state[role] = entry
    return state


def set_sampler_state(loader: Any, state: dict[str, dict[str, Any]]) -> None:
    parts = _sampling_parts(loader)
    for role, entry in state.items():
        obj = parts.get(role)
        if obj is None:
            log.warning("resume: the training loader has no %s to restore; batches may differ", role)
            continue
        if "generator" in entry and isinstance(getattr(obj, "generator", None), torch.Generator):
            obj.generator.set_state(entry["generator"])
        if "epoch" in entry:
            obj.epoch = int(entry["epoch"])


class ResumeState(pl.Callback):
    """Saves the run id, the global RNG states and the training loader's sampling state into every
    checkpoint, and restores them when fit resumes.

    The sampling state goes back into the loader as the datamodule builds it (its `train_dataloader` is
    wrapped in `setup`), before Lightning draws the first batches. Lightning's own route for this, a
    loader with `state_dict`, is skipped for checkpoints written at the end of an epoch (its fit loop
    then does not count as restarting), i.e. for every `last.ckpt`. The RNG states are restored at the
    start of the first resumed epoch: where an uninterrupted run would be with the states it had when
    the checkpoint was written (at the end of the previous epoch).
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if stage != "fit" or dm is None or getattr(dm.train_dataloader, "restores_sampling", False):
            return
        make = dm.train_dataloader

        def train_dataloader() -> Any:
            loader = make()
            if self._pending is not None and self._pending.get("sampler"):
                set_sampler_state(loader, self._pending["sampler"])
            return loader

        train_dataloader.restores_sampling = True  # type: ignore[attr-defined]
        dm.train_dataloader = train_dataloader

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        loader = trainer.train_dataloader if trainer.training or trainer.validating else None
        checkpoint[RESUME_KEY] = {
            "run_id": self.run_id,
            "rng": rng_state(),
            "sampler": sampler_state(loader) if loader is not None else {},
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        self._pending = checkpoint.get(RESUME_KEY)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            set_rng_state(self._pending["rng"])
            self._pending = None


# ---------------------------------------------------------------- which run and checkpoint


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newer of `checkpoints/last.ckpt` and Lightning's SLURM `hpc_ckpt_<n>.ckpt` in `output_dir`."""
    found = [
        p for p in [output_dir / "checkpoints" / LAST, *output_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()
    ]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _output_dir(run: Any) -> Path:
    tag = run.data.tags.get("output_dir")
    if not tag:
        raise ConfigError(f"MLflow run {run.info.run_id} has no output_dir tag: it never reached training")
    return Path(tag)


def _check_resumable(run: Any) -> None:
    from iqs.tracking.liveness import HOST_TAG, PID_TAG, run_is_alive

    status = run.info.status
    if status == "FINISHED":
        raise ConfigError(
            f"MLflow run {run.info.run_id} is FINISHED: there is nothing to resume; start a new run"
        )
    if status == "RUNNING" and run_is_alive(run):
        tags = run.data.tags
        raise ConfigError(
            f"MLflow run {run.info.run_id} is still RUNNING (pid {tags.get(PID_TAG, '?')} on "
            f"{tags.get(HOST_TAG, '?')}): stop it first, or wait for it to end"
        )


def from_run(client: Any, run_id: str, checkpoint: Path | None = None) -> ResumeTarget:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(
            f"resume={run_id}: no such MLflow run in {client.tracking_uri} (give a run id, a checkpoint "
            "path or auto)"
        ) from None
    _check_resumable(run)
    output_dir = _output_dir(run)
    checkpoint = checkpoint or latest_checkpoint(output_dir)
    if checkpoint is None:
        raise ConfigError(
            f"MLflow run {run_id} has no checkpoint to resume from in {output_dir}/checkpoints/ "
            f"(runs write {LAST} with callbacks.checkpoint.save_last=true, the default)"
        )
    return ResumeTarget(run_id, checkpoint, output_dir)


def from_checkpoint(client: Any, path: Path) -> ResumeTarget:
    from iqs.models.checkpoints import load_weights_only

    record = load_weights_only(path).get(RESUME_KEY)
    if not isinstance(record, dict) or not record.get("run_id"):
        raise ConfigError(
            f"resume={path}: the checkpoint names no MLflow run (it was not written by `iqs train`)"
        )
    return from_run(client, str(record["run_id"]), path.resolve())


def _same_params(run: Any, params: dict[str, str]) -> bool:
    from iqs.tracking.mlflow_run import changed_params

    return not changed_params(run.data.params, params)


def auto_target(client: Any, experiment_id: str, run_name: str, params: dict[str, str]) -> ResumeTarget:
    """The newest unfinished run of this name and params with a checkpoint (see the module docstring)."""
    from iqs.tracking.liveness import SLURM_JOB_TAG, run_is_alive, slurm_job_id

    query = f"attributes.status != 'FINISHED' and attributes.run_name = '{run_name}'"
    job = slurm_job_id() if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 else None
    if job:
        query += f" and tags.`{SLURM_JOB_TAG}` = '{job}'"
    runs = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time DESC"])
    for run in runs:
        # a requeued SLURM job's earlier run is dead even when it ran on another node (SLURM runs a job once)
        if run.info.status == "RUNNING" and not job and run_is_alive(run):
            continue
        if not _same_params(run, params) or not run.data.tags.get("output_dir"):
            continue
        checkpoint = latest_checkpoint(Path(run.data.tags["output_dir"]))
        if checkpoint is not None:
            return ResumeTarget(run.info.run_id, checkpoint, Path(run.data.tags["output_dir"]))
    raise ConfigError(
        f"resume=auto: no unfinished run named '{run_name}' with this config and a {LAST} in "
        f"{client.tracking_uri}; start without resume"
    )


def resume_value(cfg: Any) -> str | None:
    """`resume` of the config; under SLURM a requeued job (SLURM_RESTART_COUNT > 0) defaults to auto."""
    if "ckpt_path" in cfg:
        raise ConfigError(
            "ckpt_path is not an option of iqs train: resume=<run id | checkpoint path | auto> continues a run"
        )
    value = cfg.get("resume")
    if value in (None, "", False) and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
        return "auto"
    return None if value in (None, "", False) else str(value)


def resolve(
    cfg: Any, client: Any, experiment_id: str, run_name: str, params: dict[str, str]
) -> ResumeTarget | None:
    """The run and checkpoint `cfg.resume` names; None when the run starts afresh."""
    value = resume_value(cfg)
    if value is None:
        return None
    if value == "auto":
        return auto_target(client, experiment_id, run_name, params)
    path = Path(value).expanduser()
    if path.suffix == ".ckpt" or path.is_file():
        return from_checkpoint(client, path)
    return from_run(client, value)


def prepare(cfg: Any) -> ResumeTarget | None:
    """Before a run opens: mark this host's dead runs KILLED, then find the run `cfg.resume` continues."""
    from iqs.tracking.config_view import flatten_config
    from iqs.tracking.experiment import experiment_of
    from iqs.tracking.liveness import mark_dead_runs
    from iqs.tracking.mlflow_run import params_config
    from iqs.tracking.naming import run_name_for

    client, experiment_id, _ = experiment_of(cfg)
    mark_dead_runs(client)
    target = resolve(cfg, client, experiment_id, run_name_for(cfg), flatten_config(params_config(cfg)))
    if target is not None:
        log.info("resuming MLflow run %s from %s", target.run_id, target.checkpoint)
    return target
