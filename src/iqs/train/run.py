"""`iqs train`: one training run (or a sweep with `-m`), tracked in MLflow.

    iqs train experiment=demo
    iqs train -m experiment=demo head=regression,distribution rebalance=none,sampler

`train(cfg)` reads top to bottom: mixture -> datamodule -> model -> (feature cache) -> callbacks ->
logger -> trainer -> fit -> test -> artifacts. Every job writes only into its own output folder
(Hydra's `runtime.output_dir`: `outputs/train/<time>_<8 random hex>/` for a run,
`multirun/train/<time>_<hex>/<job>/` in a sweep, so jobs started in the same second never share one);
the jobs of one sweep share the MLflow tag `sweep_id` (iqs.tracking). `resume=<run id | checkpoint |
auto>` continues a run in its own folder and MLflow run (iqs.train.resume).

Outcomes: SIGTERM/SIGINT end the run KILLED and `main` returns 128 + signal (iqs.core.signals); a
configuration or data error prints one line (its traceback goes to the job's log file and the run's
`traceback.txt`) and returns 1, as does a tracking server that stays down past `logger.outage_grace_s`
(the line says where the run's files are kept and how to upload them, iqs.tracking.kept); any other
error propagates with its traceback.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from iqs.core.config import conf_dir
from iqs.metrics.registry import TABLE_METRICS  # the metrics whose record has a `table_column`
from iqs.train.launchers import register_resolvers
from iqs.train.pipeline import fit_and_test, job_output_dir

log = logging.getLogger(__name__)
register_resolvers()  # before Hydra composes: conf/hparams_search/ presets use them


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


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train and test one configuration; returns (metrics, objects) like lightning-hydra-template.

    The MLflow run opens first, so a bad dataset root or config fails a recorded run (FAILED, traceback).
    """
    import pytorch_lightning as pl
    import torch

    from iqs.report.cv import cv_tags
    from iqs.train.distributed import (
        check_resume_world,
        is_global_zero,
        rank_zero_tracked_run,
        uses_replay,
        write_replay_config,
    )
    from iqs.train.launchers import threads_per_job
    from iqs.train.options import check_values
    from iqs.train.resume import prepare

    check_trained(cfg)
    check_values(cfg)  # ordered thresholds, a fold in range, ...: refused before a run exists
    check_resume_world(cfg)  # ranks a cluster starts cannot be handed rank 0's checkpoint
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
        run.keep_locally_in(output_dir)  # where a tracking-server outage keeps what it cannot send
        metrics, objects = fit_and_test(cfg, run, output_dir, checkpoint)
        run.log_metrics({"time/total_s": time.perf_counter() - started})
    return metrics, objects


def monitored_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    value = metrics.get(str(cfg.monitor.metric))
    return None if value is None else float(value)


def print_test_table(metrics: dict[str, float], dataset_names: list[str], title: str) -> None:
    """Rows: each source dataset and `all`; columns: the test groups and the headline test metrics.

    A metric's 95% interval (`test/<ds>/<m>_lo|_hi`, logged with the run) is printed under its value;
    where the rule (iqs.metrics.interval_rule) gives none for that many groups, the caption says why.
    """
    from rich.console import Console
    from rich.table import Table

    from iqs.metrics.interval_rule import interval_method, too_few_text

    table = Table(title=title)
    table.add_column("dataset", no_wrap=True)
    table.add_column("groups", justify="right")
    for m in TABLE_METRICS:
        table.add_column(m, justify="right", no_wrap=True)
    too_few: set[int] = set()
    for ds in [*dataset_names, "all"]:
        n = metrics.get(f"test/{ds}/n_groups")
        cells = ["-" if n is None or math.isnan(n) else str(int(n))]
        for m in TABLE_METRICS:
            v = metrics.get(f"test/{ds}/{m}")
            if v is None or math.isnan(v):
                cells.append("-")
                continue
            lo, hi = metrics.get(f"test/{ds}/{m}_lo"), metrics.get(f"test/{ds}/{m}_hi")
            if n is not None and not math.isnan(n) and interval_method(m, int(n)) is None:
                too_few.add(int(n))
                cells.append(f"{v:.3f}\nno CI")
            elif lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
                cells.append(f"{v:.3f}")
            else:
                cells.append(f"{v:.3f}\n[{lo:.2f}, {hi:.2f}]")
        table.add_row(ds, *cells, style="bold" if ds == "all" else None)
    notes = ["under each value: its 95% interval over the test groups (method: iqs.metrics.interval_rule)"]
    notes += [too_few_text(n) for n in sorted(too_few)]
    table.caption = "\n".join(notes)
    table.caption_justify = "left"
    # piped output (make, CI) defaults to 80 columns, which would truncate the dataset names
    console = Console(width=max(Console().width, 150))
    console.print(table)
    console.print("Browse and compare runs: [bold]make ui[/bold] (MLflow UI) or [bold]iqs compare[/bold]")


def logged_metrics(cfg: DictConfig, run_id: str) -> dict[str, float]:
    """The run's metrics as MLflow holds them (the test intervals are logged there, not returned by
    `train`); {} when the store cannot be read, so the table still prints its values."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from iqs.tracking.store import tracking_uri_for

    uri = tracking_uri_for(cfg)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        return {}  # no store (a run that logged nowhere): opening one would create it
    try:
        return dict(MlflowClient(uri).get_run(run_id).data.metrics)
    except (MlflowException, OSError) as exc:
        log.warning("test table without intervals: cannot read run %s from the store (%s)", run_id, exc)
        return {}


@hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
def hydra_entry(cfg: DictConfig) -> float | None:
    """The Hydra task: returns the monitored metric (what a sweeper such as Optuna optimises).

    A configuration or data error is reported in one line (iqs.train.user_errors) and the job returns None,
    so the other jobs of a sweep still run; `main` then exits 1.
    """
    from iqs.train.user_errors import report, user_error

    try:
        metrics, objects = train(cfg)
    except Exception as exc:
        if (told := user_error(exc)) is None:
            raise
        report(told)
        return None
    return report_job(cfg, metrics, objects)


def report_job(cfg: DictConfig, metrics: dict[str, float], objects: dict[str, Any]) -> float | None:
    """Print the job's test table (rank 0 only) and return its monitored metric."""
    from iqs.tracking.naming import thresholds_name

    if objects.get("run_id") is None:  # a DDP rank > 0 started by a cluster (iqs.train.distributed.finish)
        return monitored_value(cfg, metrics)
    title = f"{cfg.head.name} head, rebalance={cfg.rebalance.name}, thresholds {thresholds_name(cfg)}"
    if untrained(cfg):
        title = f"UNTRAINED model (allow_untrained=true): {title}"
    print_test_table(
        {**logged_metrics(cfg, objects["run_id"]), **metrics},
        objects["datamodule"].dataset_names,
        f"test metrics: {title} (MLflow run {objects['run_id']})",
    )
    return monitored_value(cfg, metrics)


def main(argv: list[str] | None = None) -> int:
    """`iqs train [overrides]`: Hydra parses `argv` as its own command line (so -m, --cfg job, ... work).

    Returns the process exit status: 0, 1 when a job failed on a configuration or data error, 128 + the
    signal number when SIGTERM or SIGINT stopped it. The monitored metric is the Hydra task's return value.
    """
    from iqs.core.config import check_app_keys, hydra_app_argv
    from iqs.core.signals import Interrupted, signals_raise
    from iqs.train import user_errors

    check_app_keys("train", list(argv or []))  # `iqs train lr=1` -> did you mean 'optimizer.lr'?
    user_errors.reported.clear()
    # jobs of a joblib/submitit sweep report in their own processes: collecting hears them too
    with user_errors.collecting() as elsewhere:
        try:
            with signals_raise(), hydra_app_argv("iqs-train", list(argv or [])):
                hydra_entry()
        except Interrupted as exc:
            # a note: the tracking server was down, so the run's end and files wait in its job folder
            ended = (getattr(exc, "__notes__", None) or ["the MLflow run ended KILLED"])[-1]
            print(f"iqs train: {exc}; {ended}", file=sys.stderr)
            return exc.exit_code
    return 1 if user_errors.reported or elsewhere else 0
