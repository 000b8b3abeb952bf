"""One MLflow run per training run: how it opens, what it logs, and how it ends.

The store, client and experiment come from iqs.tracking.experiment, the run's name and tags from
iqs.tracking.naming. Imports flow one way: this module never imports what logs through it
(iqs.report.artifacts, plots, model_card, lightning_logger); tests/test_tracking_imports.py checks it.

Ending. The run ends FINISHED when the `with` block completes; when it raises, the traceback is stored
(artifact `traceback.txt`, tags `error` and `traceback`; only logged locally while the tracking server
is down), the run ends FAILED (KILLED for SIGTERM, SIGINT
or Ctrl-C) and the exception propagates. A run can be reopened (`resume_run_id`, iqs.train.resume): it
goes back to RUNNING and keeps its params, which must not change.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from iqs.tracking.config_view import flatten_config, to_container
from iqs.tracking.experiment import experiment_of
from iqs.tracking.gitinfo import git_info
from iqs.tracking.liveness import ENDED_BY_TAG
from iqs.tracking.naming import axes_of, run_name_for, sweep_id_for
from iqs.tracking.outage import METRICS_PER_BATCH

log = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation): longer values are rejected, not truncated
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
PARAMS_PER_BATCH = 100

# ---------------------------------------------------------------- run


class TrackedRun:
    """An open MLflow run, logged through `MlflowClient` (no global active-run state)."""

    resumed: bool = False  # reopened by `iqs train resume=...` (open_run)
    # a resumed run: the last step of each metric its earlier attempts stored; values up to it are not
    # logged again (the attempt died after its last checkpoint, so the resumed one replays those steps)
    logged_steps: Mapping[str, int] = {}

    def __init__(self, client: Any, run: Any, experiment_name: str, sweep_id: str, cfg: Any) -> None:
        self.client = client
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        self.experiment_name = experiment_name
        self.run_name: str = run.info.run_name
        self.artifact_uri: str = run.info.artifact_uri
        self.sweep_id = sweep_id
        self.cfg = cfg

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri

    def keep_locally_in(self, job_dir: Path) -> None:
        """The job folder where a tracking-server outage keeps what it could not send (iqs.tracking.kept)."""
        if hasattr(self.client, "keep_locally_in"):  # a tracking server's client (iqs.tracking.outage)
            self.client.keep_locally_in(self.run_id, Path(job_dir))

    def fresh(self, metrics: Mapping[str, Any], step: int | None) -> dict[str, Any]:
        """`metrics` without the values of steps an earlier attempt of this run stored (`logged_steps`)."""
        if not self.logged_steps:
            return dict(metrics)
        at = int(step or 0)
        return {k: v for k, v in metrics.items() if at > self.logged_steps.get(str(k), -1)}

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics named `<stage>/<dataset>/<metric>`; NaN is kept (MLflow stores it), None is skipped.
        With a tracking server they are queued and sent in the background (iqs.tracking.outage)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = self.fresh(metrics, step)
        batch = [Metric(str(k), float(v), now, int(step or 0)) for k, v in metrics.items() if v is not None]
        for i in range(0, len(batch), METRICS_PER_BATCH):  # the limit of the queue's batches too
            self.client.log_batch(self.run_id, metrics=batch[i : i + METRICS_PER_BATCH])

    def log_params_flat(self, cfg: Any) -> dict[str, str]:
        """Log `flatten_config(cfg)`; keys already logged with the same value are skipped (params are immutable)."""
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        flat = flatten_config(cfg)
        fresh: list[Param] = []
        for key, value in flat.items():
            if len(key) > MAX_KEY:
                raise ValueError(f"config key '{key[:80]}...' is longer than MLflow's {MAX_KEY} characters")
            if len(value) > MAX_PARAM_VALUE:
                value = value[: MAX_PARAM_VALUE - 20] + "...<truncated>"
            if key in logged:
                if logged[key] != value:
                    raise ValueError(
                        f"param '{key}' was logged as '{logged[key]}' and cannot change to '{value}' "
                        "(MLflow params are immutable)"
                    )
                continue
            fresh.append(Param(key, value))
        for i in range(0, len(fresh), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=fresh[i : i + PARAMS_PER_BATCH])
        return flat

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(str(k), str(v)[:MAX_TAG_VALUE]) for k, v in tags.items() if v is not None]
        for i in range(0, len(batch), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=batch[i : i + PARAMS_PER_BATCH])

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        """A file, or a folder's contents, under `subdir/` of the run's artifacts."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"cannot log artifact {path}: no such file or folder")
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), subdir)
        else:
            self.client.log_artifact(self.run_id, str(path), subdir)

    def log_figure(self, fig: Any, name: str, *, close: bool = True) -> None:
        """A matplotlib figure as `name` (e.g. `plots/confusion_all.png`); closed afterwards to free memory."""
        try:
            self.client.log_figure(self.run_id, fig, name, save_kwargs={"dpi": 110, "bbox_inches": "tight"})
        finally:
            if close:
                import matplotlib.pyplot as plt

                plt.close(fig)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_mixture(self, table: Any, fingerprint: str | None = None) -> str:
        """Tag the data fingerprint, store per-source/split/label counts (`data/counts.csv`) and log
        each source as an MLflow dataset input (the runs table's Dataset column; see log_sources)."""
        from iqs.data.table import fingerprint as table_fingerprint
        from iqs.tracking.run_inputs import mixture_counts

        if fingerprint is None:
            fingerprint = table_fingerprint(table)
        self.set_tags({"fingerprint": fingerprint})
        self.log_text(mixture_counts(table).to_csv(index=False), "data/counts.csv")
        self.log_sources(table)
        return fingerprint

    def log_sources(self, table: Any) -> None:
        """One MLflow dataset input per source (iqs.tracking.run_inputs.dataset_inputs). The UI can then
        filter runs by dataset, as can `mlflow.search_runs(filter_string="datasets.name = 'ava'")`."""
        from iqs.tracking.run_inputs import dataset_inputs

        inputs = dataset_inputs(self.cfg, table)
        if self.resumed:  # the interrupted attempt logged them already; the data did not change (_reopen)
            logged = {
                (d.dataset.name, d.dataset.digest)
                for d in self.client.get_run(self.run_id).inputs.dataset_inputs
            }
            inputs = [i for i in inputs if (i.dataset.name, i.dataset.digest) not in logged]
        for attempt in range(3):
            if not inputs:
                return
            try:
                self.client.log_inputs(self.run_id, datasets=inputs)
                return
            except Exception as exc:
                # MLflow's SQL store checks for a dataset row, then inserts it: two sweep jobs logging the
                # same source at once (joblib, submitit) both insert and one hits the UNIQUE constraint.
                # The row exists by then, so the retry finds it.
                if "UNIQUE constraint" not in str(exc) or attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def _fail(run: TrackedRun, exc: BaseException) -> BaseException | None:
    """Attach the traceback and end the run; failures here are logged, never allowed to mask the original
    exception. Returns the `RunKeptLocally` of a run whose server stayed down (None otherwise).

    A signal or Ctrl-C (iqs.core.signals.is_interruption) ends the run KILLED, anything else FAILED.
    While the tracking server is known to be down (a TrackingOutageError, the metric queue in an outage,
    a call waiting for it) the run waits at most iqs.tracking.outage.ABORT_GRACE_S for it; if it is still
    down, the traceback and the end go to the job folder without another call (iqs.tracking.kept).
    """
    from iqs.core.signals import is_interruption
    from iqs.tracking.outage import ABORT_GRACE_S, RunKeptLocally, TrackingOutageError

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    status = "KILLED" if is_interruption(exc) else "FAILED"
    client = run.client
    buffer = getattr(client, "buffer", None)  # a tracking server's client (iqs.tracking.outage)
    server_down = buffer is not None and (
        isinstance(exc, TrackingOutageError)
        or buffer.outage_since is not None
        or getattr(client, "_waiting_since", None) is not None
    )
    try:
        if server_down and not client.give_up_unless_back(ABORT_GRACE_S):
            log.warning(
                "MLflow tracking server %s is unreachable: the traceback of run %s goes to its job folder",
                run.tracking_uri,
                run.run_id,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        run.log_text(text, "traceback.txt")
        run.set_tags({"error": f"{type(exc).__name__}: {exc}"[:MAX_TAG_VALUE], "traceback": text[-4000:]})
    except Exception:  # noqa: BLE001 - the store may be what failed
        log.exception("could not attach the traceback to MLflow run %s", run.run_id)
    try:
        run.end(status)
    except RunKeptLocally as kept:
        return kept
    except Exception:  # noqa: BLE001
        log.exception("could not mark MLflow run %s as %s", run.run_id, status)
    return None


# config keys that may differ between a run and its resumption: never logged as params
NOT_PARAMS = ("resume",)


# nodes that gather other keys for one object (iqs.train.build): a value that points at another key
# (`${loader.batch_size}`) is logged under that key already, so only values set in the node itself are params
OBJECT_NODES = ("datamodule", "module")


def params_config(cfg: Any) -> dict:
    """The resolved config that a run logs as params (without NOT_PARAMS, nor how a named group is built)."""
    params = {}
    for key, value in to_container(cfg).items():
        if key in NOT_PARAMS:
            continue
        if key in OBJECT_NODES:
            value = _set_in_node(cfg[key], value)
            if not value:
                continue
        params[key] = _without_build_keys(value)
    return params


def _set_in_node(node: Any, resolved: Mapping) -> dict:
    """The entries of an OBJECT_NODES node that are neither build keys nor interpolations."""
    is_interpolation = OmegaConf.is_interpolation if OmegaConf.is_config(node) else (lambda _n, _k: False)
    return {
        k: v for k, v in resolved.items() if not str(k).startswith("_") and not is_interpolation(node, str(k))
    }


def _without_build_keys(node: Any) -> Any:
    """A group with a `name` (head, backbone, rebalance, ...) is told apart by it: its `_target_` and
    `_partial_` (how iqs.train.build instantiates it) are no params. Other nodes keep theirs (optimizer)."""
    if not isinstance(node, Mapping):
        return node
    named = "name" in node
    return {k: _without_build_keys(v) for k, v in node.items() if not (named and str(k).startswith("_"))}


def changed_params(logged: Mapping[str, str], params: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The params a run logged that `params` gives another value: {key: (logged, new)}. Values longer than
    MAX_PARAM_VALUE were logged truncated (log_params_flat), so they cannot be compared."""
    return {
        k: (logged[k], v)
        for k, v in params.items()
        if k in logged and logged[k] != v and len(v) <= MAX_PARAM_VALUE
    }


def _reopen(client: Any, run_id: str, cfg: Any, owner: Mapping[str, str]) -> Any:
    """The MLflow run `run_id`, set RUNNING again after checking that `cfg` logs the params it has.

    The run still names the dead process (iqs.tracking.liveness tags); `owner` (this process's tags) is
    written first, so that a liveness check on this host never sees the run RUNNING under the dead pid."""
    from mlflow.entities import RunTag

    from iqs.data.mixture import ConfigError

    changed = changed_params(client.get_run(run_id).data.params, flatten_config(params_config(cfg)))
    if changed:
        detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:5])
        raise ConfigError(
            f"resume: MLflow run {run_id} was started with another config ({detail}); a resumed run keeps "
            "its config, so drop those overrides (or start a new run)"
        )
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in owner.items()])
    _clear_failure(client, client.get_run(run_id))
    client.update_run(run_id, status="RUNNING")
    return client.get_run(run_id)


# what an attempt that did not finish leaves on its run; a resumed run that finishes carries none of it
FAILURE_TAGS = ("error", "traceback", ENDED_BY_TAG)
RESUMED_AFTER_TAG = "iqs.resumed_after"
RESUMES_TAG = "iqs.resumes"


def _clear_failure(client: Any, run: Any) -> None:
    """Move the earlier attempt's failure marks into history: the tag `iqs.resumed_after` gains
    `attempt <n>: <status> (<error or who ended it>)`, the tags FAILURE_TAGS go, and its `traceback.txt`
    moves to `attempts/<n>/traceback.txt` (where the store cannot delete, the copy stays and the tag says
    whose it is)."""
    from mlflow.entities import RunTag

    tags = run.data.tags
    attempt = int(tags.get(RESUMES_TAG, "0")) + 1
    why = tags.get("error") or tags.get(ENDED_BY_TAG) or "no reason recorded"
    entry = f"attempt {attempt}: {run.info.status} ({why[:500]})"
    history = f"{tags[RESUMED_AFTER_TAG]}; {entry}" if tags.get(RESUMED_AFTER_TAG) else entry
    client.log_batch(run.info.run_id, tags=[RunTag(RESUMED_AFTER_TAG, history[-MAX_TAG_VALUE:])])
    for key in FAILURE_TAGS:
        if key in tags:
            client.delete_tag(run.info.run_id, key)
    if any(a.path == "traceback.txt" for a in client.list_artifacts(run.info.run_id)):
        _move_traceback(client, run, f"attempts/{attempt}")


def _move_traceback(client: Any, run: Any, folder: str) -> None:
    import tempfile

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tempfile.TemporaryDirectory(prefix="iqs-traceback-") as tmp:
        local = client.download_artifacts(run.info.run_id, "traceback.txt", tmp)
        client.log_artifact(run.info.run_id, local, folder)
    try:
        repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
        repo.delete_artifacts("traceback.txt")
    except Exception as exc:  # noqa: BLE001 - e.g. a server started with --no-serve-artifacts deletes nothing
        log.warning(
            "MLflow run %s: could not delete the earlier attempt's traceback.txt (%s); it is copied to %s/ "
            "and the tag %s says which attempt failed",
            run.info.run_id,
            exc,
            folder,
            RESUMED_AFTER_TAG,
        )


def latest_steps(run: Any) -> dict[str, int]:
    """The last step stored of each metric of `run`. `RunData.metrics` keeps only the values; its proto (the
    public `to_proto`) carries the Metric entities with their steps, in one call (`get_metric_history` is one
    call per key)."""
    return {m.key: int(m.step) for m in run.data.to_proto().metrics}


def open_run(
    cfg: Any,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    resume_run_id: str | None = None,
) -> TrackedRun:
    """Create the run (or reopen `resume_run_id`, RUNNING again), tag it with its git state, axes and
    process (iqs.tracking.liveness), and log the resolved config (params + `config.yaml`); the caller ends it."""
    from mlflow.tracking.context.registry import resolve_tags

    from iqs.tracking.liveness import owner_tags

    client, experiment_id, experiment = experiment_of(cfg)
    git = git_info()
    sweep_id = str((tags or {}).get("sweep_id") or sweep_id_for(cfg))
    owner = owner_tags()
    all_tags = {
        **git.tags(),
        **axes_of(cfg),
        "sweep_id": sweep_id,
        **owner,
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    name = run_name or run_name_for(cfg)
    if resume_run_id:
        mlflow_run = _reopen(client, resume_run_id, cfg, owner)
        name = mlflow_run.info.run_name
        if not (tags or {}).get("sweep_id") and sweep_id == "none":  # a resumed sweep job stays in its sweep
            sweep_id = all_tags["sweep_id"] = mlflow_run.data.tags.get("sweep_id", sweep_id)
        all_tags[RESUMES_TAG] = str(int(mlflow_run.data.tags.get(RESUMES_TAG, "0")) + 1)
    else:
        mlflow_run = client.create_run(experiment_id, tags=resolve_tags(all_tags), run_name=name)
    run = TrackedRun(client, mlflow_run, experiment, sweep_id, cfg)
    run.resumed = bool(resume_run_id)
    if resume_run_id:
        run.logged_steps = latest_steps(mlflow_run)
    try:
        if resume_run_id:
            run.set_tags(all_tags)
        run.log_params_flat(params_config(cfg))
        config_yaml = OmegaConf.to_yaml(OmegaConf.create(params_config(cfg)))
        run.log_text(config_yaml, "config_resumed.yaml" if resume_run_id else "config.yaml")
        if git.diff:
            run.log_text(git.diff, "git.diff")
    except BaseException as exc:
        kept = _fail(run, exc)
        if kept is not None:
            exc.add_note(str(kept))
        raise
    log.info(
        "MLflow run %s (%s) in experiment '%s', sweep %s, store %s%s",
        name,
        run.run_id,
        experiment,
        sweep_id,
        client.tracking_uri,
        " (resumed)" if resume_run_id else "",
    )
    return run


@contextmanager
def tracked_run(
    cfg: Any,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    resume_run_id: str | None = None,
) -> Iterator[TrackedRun]:
    """`with tracked_run(cfg) as run:` — FINISHED on success; on error the traceback is attached and the run
    ends FAILED, or KILLED for a signal or Ctrl-C; the exception is re-raised. `resume_run_id` continues
    that run instead of creating one."""
    from iqs.tracking.outage import TrackingOutageError

    run = open_run(cfg, run_name, tags, resume_run_id)
    try:
        yield run
    except BaseException as exc:
        kept = _fail(run, exc)
        if kept is None:
            raise
        if isinstance(exc, TrackingOutageError):  # the outage is the whole story: one line says it
            raise kept from exc
        exc.add_note(str(kept))
        raise
    run.end("FINISHED")  # RunKeptLocally when the server stayed down: the run ends FAILED, said in one line
