"""One MLflow run per training run: where it is stored, what it is called, and how it ends.

Store. `iqs.tracking.store.tracking_uri_for` decides (explicit `logger.tracking_uri=...` >
$MLFLOW_TRACKING_URI > `sqlite:///<mlruns_dir>/mlflow.db`); every command uses that one resolver.
`make_client` bounds MLflow's HTTP retries (`logger.http_*`) and, for a tracking server, queues metrics
so that training never waits for it (iqs.tracking.outage; docs/running-at-scale/tracking-server.md).

Artifacts. Experiments are created with an explicit artifact location,
`<logger.artifact_location>/<experiment name>`, so run files land under `mlruns/artifacts/` and never in
the cwd. For a remote tracking server a plain local path is ignored and the server's default is used
(a URI with a scheme, e.g. `s3://` or `mlflow-artifacts:/`, is passed through).

Ending. The run ends FINISHED when the `with` block completes; when it raises, the traceback is stored
(artifact `traceback.txt`, tags `error` and `traceback`), the run ends FAILED (KILLED for SIGTERM, SIGINT
or Ctrl-C) and the exception propagates. A run can be reopened (`resume_run_id`, iqs.train.resume): it
goes back to RUNNING and keeps its params, which must not change.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from iqs.metrics.label_rule import LabelRule, pair_name
from iqs.tracking.gitinfo import git_info
from iqs.tracking.store import moved_store_warning, store_init_lock, tracking_uri_for

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "iqs-digikam"
# MLflow's limits (mlflow.utils.validation): longer values are rejected, not truncated
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
# the research axes: tag name -> config key of the chosen option's name
AXES = {
    "head": "head.name",
    "rebalance": "rebalance.name",
    "thresholds": "thresholds.name",
    "data": "data.name",
}
REMOTE_SCHEMES = ("http", "https", "databricks")
# MLflow 3 opens an experiment without this tag in its GenAI view (traces); this value opens the
# training-runs table ("Machine learning" in the UI's kind selector; mlflow/server/js ExperimentKind).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """`cfg.a.b` for a DictConfig or a nested dict, `default` when any level is missing or null."""
    if cfg is None:
        return default
    if isinstance(cfg, DictConfig):
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    else:
        value = cfg
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
            if value is None:
                break
    return default if value is None else value


def to_container(cfg: Any) -> dict:
    """Plain resolved dict of a config (DictConfig or mapping); interpolation errors name the key."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
    return dict(cfg or {})


def flatten_config(cfg: Any, prefix: str = "") -> dict[str, str]:
    """Resolved config as MLflow params: dot keys, string values (lists as `[a, b]`, null as `null`)."""
    flat: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
            return
        if node is None:
            text = "null"
        elif isinstance(node, Mapping):
            text = "{}"
        elif isinstance(node, list | tuple):
            text = "[" + ", ".join("null" if x is None else str(x) for x in node) + "]"
        else:
            text = str(node)
        flat[key] = text

    walk(to_container(cfg), prefix)
    return flat


def _safe(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(text)).strip("_") or "x"


def thresholds_name(cfg: Any) -> str:
    """`5_6` from the pair's values: `thresholds=t5_6 thresholds.t1=4 thresholds.t2=7` is `4_7`, not its
    config group's name; the name is used only when the config has no values."""
    t1, t2 = cfg_get(cfg, "thresholds.t1"), cfg_get(cfg, "thresholds.t2")
    if t1 is not None and t2 is not None:
        return pair_name(float(t1), float(t2))
    name = cfg_get(cfg, "thresholds.name")
    return "none" if name is None else str(name)


def source_thresholds(
    cfg: Any, sources: list[str], default: tuple[float, float]
) -> dict[str, tuple[float, float]]:
    """Each source's threshold pair: its own override in `data.sources.<name>.thresholds`, else the run's."""
    out = {}
    for name in sources:
        own = cfg_get(cfg, f"data.sources.{name}.thresholds")
        if own is not None and cfg_get(own, "t1") is not None:
            out[name] = (float(cfg_get(own, "t1")), float(cfg_get(own, "t2")))
        else:
            out[name] = (float(default[0]), float(default[1]))
    return out


def label_rule_of(cfg: Any) -> LabelRule | None:
    """The run's label rule (declared pair + source overrides) from its config; None without thresholds."""
    t1, t2 = cfg_get(cfg, "thresholds.t1"), cfg_get(cfg, "thresholds.t2")
    if t1 is None or t2 is None:
        return None
    declared = (float(t1), float(t2))
    sources = cfg_get(cfg, "data.sources") or {}
    return LabelRule(declared, source_thresholds(cfg, [str(s) for s in sources], declared))


def axes_of(cfg: Any) -> dict[str, str]:
    """The values of the research axes (head, rebalance, thresholds, data, backbone), 'none' when absent,
    and `labels`: the label rule's key (the declared pair plus any source's own pair, e.g.
    `5_6; demo_ava=4_7`); runs label their images alike iff their `labels` tags are equal."""
    axes = {tag: str(cfg_get(cfg, key, "none")) for tag, key in AXES.items()}
    axes["thresholds"] = thresholds_name(cfg)
    axes["backbone"] = str(cfg_get(cfg, "backbone.name", "none"))
    rule = label_rule_of(cfg)
    axes["labels"] = rule.key if rule is not None else axes["thresholds"]
    return axes


def run_name_for(cfg: Any) -> str:
    """ASCII run name from the axes, e.g. `regression-sampler-t5_6-demo`."""
    a = axes_of(cfg)
    return "-".join([_safe(a["head"]), _safe(a["rebalance"]), "t" + _safe(a["thresholds"]), _safe(a["data"])])


def sweep_id_for(cfg: Any) -> str:
    """`logger.sweep_id` when set, else the Hydra multirun's sweep folder (one id per `-m` launch), else 'none'."""
    explicit = cfg_get(cfg, "logger.sweep_id") or cfg_get(cfg, "sweep_id")
    if explicit:
        return str(explicit)
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            sweep_dir = Path(HydraConfig.get().sweep.dir)
            try:
                sweep_dir = sweep_dir.resolve().relative_to(Path.cwd().resolve())
            except ValueError:
                sweep_dir = Path(*sweep_dir.parts[-2:])
            parts = [p for p in sweep_dir.parts if p not in ("multirun", "/")]
            return _safe("_".join(parts))
    except (ImportError, ValueError):
        pass
    return "none"


def annotation_source(cfg: Any, source: str) -> str:
    """The annotation file of a mixture source (`<root>/<annotations>`, the first of a list), else its root."""
    node = cfg_get(cfg, f"data.sources.{source}")
    root = cfg_get(node, "root")
    if root is None:
        return source
    names = cfg_get(node, "annotations")
    if isinstance(names, list | tuple) or (names is not None and not isinstance(names, str)):
        names = next(iter(names), None)
    path = Path(str(root)).expanduser() / str(names) if names else Path(str(root)).expanduser()
    return str(path.resolve())


# ---------------------------------------------------------------- store


def artifact_location_for(cfg: Any, tracking_uri: str, experiment_name: str) -> str | None:
    """Artifact location for a new experiment: `<root>/<experiment>` as a URI, or None for the server's choice."""
    remote = urlparse(tracking_uri).scheme in REMOTE_SCHEMES
    root = cfg_get(cfg, "logger.artifact_location")
    if root is None:
        if remote:
            return None
        # never MLflow's own default, which is relative to the cwd
        root = f"{cfg_get(cfg, 'paths.mlruns_dir', 'mlruns')}/artifacts"
    root = str(root)
    has_scheme = bool(urlparse(root).scheme) and not re.match(r"^[A-Za-z]:[\\/]", root)
    if remote and not has_scheme:
        return None  # a client-side path means nothing to a remote server
    if has_scheme:
        return root.rstrip("/") + "/" + _safe(experiment_name)
    path = Path(root).expanduser().resolve() / _safe(experiment_name)
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def make_client(cfg: Any, tracking_uri: str) -> Any:
    """The run's `MlflowClient`: MLflow's HTTP retries bounded by `logger.http_*` (iqs.tracking.http_settings);
    for a tracking server (http/https) metrics are buffered through outages (iqs.tracking.outage)."""
    from mlflow import MlflowClient

    from iqs.tracking.http_settings import apply_http_settings
    from iqs.tracking.outage import BufferedClient

    apply_http_settings(cfg)
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        return MlflowClient(tracking_uri=tracking_uri)
    return BufferedClient(
        tracking_uri,
        retry_interval_s=float(cfg_get(cfg, "logger.outage_retry_s", 15)),
        grace_s=float(cfg_get(cfg, "logger.outage_grace_s", 120)),
        max_pending=int(cfg_get(cfg, "logger.outage_max_buffered", 200_000)),
    )


def ensure_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """Id of the active experiment `name`, created (with the artifact location) when absent.

    An existing experiment of a local store whose files lie outside the store (a copied `mlruns/`) is
    reported: iqs.tracking.store.moved_store_warning says why and how to fix it.

    The experiment is marked as model training (EXPERIMENT_KIND_TAG) unless someone set its kind already.
    """
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise MlflowException(
                f"MLflow experiment '{name}' is deleted (it sits in the trash of {client.tracking_uri}); "
                f"restore it with `mlflow experiments restore --experiment-id {exp.experiment_id}` "
                "or choose another logger.experiment_name"
            )
        if EXPERIMENT_KIND_TAG not in exp.tags:  # stores made before the tag was set
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        moved = moved_store_warning(client.tracking_uri, name, exp.artifact_location, artifact_location)
        if moved:
            log.warning(moved)
        return exp.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    except MlflowException:
        # another job of the same sweep created it between our lookup and our create
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# ---------------------------------------------------------------- run


class TrackedRun:
    """An open MLflow run, logged through `MlflowClient` (no global active-run state)."""

    resumed: bool = False  # reopened by `iqs train resume=...` (open_run)

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

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics named `<stage>/<dataset>/<metric>`; NaN is kept (MLflow stores it), None is skipped.
        With a tracking server they are queued and sent in the background (iqs.tracking.outage)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(str(k), float(v), now, int(step or 0)) for k, v in metrics.items() if v is not None]
        for i in range(0, len(batch), METRICS_PER_BATCH):
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
        from iqs.tracking.artifacts import mixture_counts

        if fingerprint is None:
            fingerprint = table_fingerprint(table)
        self.set_tags({"fingerprint": fingerprint})
        self.log_text(mixture_counts(table).to_csv(index=False), "data/counts.csv")
        self.log_sources(table)
        return fingerprint

    def log_sources(self, table: Any) -> None:
        """One MLflow dataset input per source: name = the source, digest = the fingerprint of its rows
        (iqs.data.table.fingerprint), source = its annotation file, context `mixture`. The UI can then
        filter runs by dataset, as can `mlflow.search_runs(filter_string="datasets.name = 'ava'")`."""
        import warnings

        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        from iqs.data.table import fingerprint as table_fingerprint

        inputs = []
        for name, rows in table.groupby(table["dataset"].astype(str), sort=True):
            with warnings.catch_warnings():
                # a local path matches two equivalent source types; MLflow picks the local-artifact one
                warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
                # the schema shown in the UI needs no advice about missing integers
                warnings.filterwarnings("ignore", message=".*Inferred schema contains integer.*")
                dataset = mlflow.data.from_pandas(
                    rows.reset_index(drop=True),
                    source=annotation_source(self.cfg, str(name)),
                    name=str(name),
                    digest=table_fingerprint(rows),
                )
                entity = dataset._to_mlflow_entity()  # the schema is inferred here, lazily
            inputs.append(DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "mixture")]))
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)

    def log_test_artifacts(
        self,
        predictions: Any,
        metrics: Mapping[str, float],
        confusion: Mapping[str, Any],
        label_table: Any,
        thresholds: tuple[float, float],
        cfg: Any,
        checkpoint_path: str | Path | None,
        *,
        io_meta: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Plots, predictions CSV, best checkpoint and model card (see iqs.tracking.artifacts)."""
        from iqs.tracking.artifacts import log_test_artifacts

        return log_test_artifacts(
            self,
            predictions,
            metrics,
            confusion,
            label_table,
            thresholds,
            cfg,
            checkpoint_path,
            io_meta=io_meta,
        )

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def _fail(run: TrackedRun, exc: BaseException) -> None:
    """Attach the traceback; failures here are logged, never allowed to mask the original exception.

    A signal or Ctrl-C (iqs.train.signals.is_interruption) ends the run KILLED, anything else FAILED.
    """
    from iqs.train.signals import is_interruption

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    status = "KILLED" if is_interruption(exc) else "FAILED"
    try:
        run.log_text(text, "traceback.txt")
        run.set_tags({"error": f"{type(exc).__name__}: {exc}"[:MAX_TAG_VALUE], "traceback": text[-4000:]})
    except Exception:  # noqa: BLE001 - the store may be what failed
        log.exception("could not attach the traceback to MLflow run %s", run.run_id)
    finally:
        try:
            run.end(status)
        except Exception:  # noqa: BLE001
            log.exception("could not mark MLflow run %s as %s", run.run_id, status)


# config keys that may differ between a run and its resumption: never logged as params
NOT_PARAMS = ("resume",)


def params_config(cfg: Any) -> dict:
    """The resolved config that a run logs as params (without NOT_PARAMS)."""
    return {k: v for k, v in to_container(cfg).items() if k not in NOT_PARAMS}


def experiment_of(cfg: Any) -> tuple[Any, str, str]:
    """(MlflowClient of the run's store, experiment id, experiment name); the experiment is created if absent."""
    uri = tracking_uri_for(cfg)
    experiment = str(cfg_get(cfg, "logger.experiment_name", DEFAULT_EXPERIMENT))
    with store_init_lock(uri):  # parallel sweep jobs: one at a time creates the tables of a new store
        client = make_client(cfg, uri)
        experiment_id = ensure_experiment(client, experiment, artifact_location_for(cfg, uri, experiment))
    return client, experiment_id, experiment


def _reopen(client: Any, run_id: str, cfg: Any) -> Any:
    """The MLflow run `run_id`, set RUNNING again after checking that `cfg` logs the params it has."""
    from iqs.data.mixture import ConfigError

    existing = client.get_run(run_id)
    logged = existing.data.params
    changed = {
        k: (logged[k], v)
        for k, v in flatten_config(params_config(cfg)).items()
        if k in logged and logged[k] != v and len(v) <= MAX_PARAM_VALUE
    }
    if changed:
        detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:5])
        raise ConfigError(
            f"resume: MLflow run {run_id} was started with another config ({detail}); a resumed run keeps "
            "its config, so drop those overrides (or start a new run)"
        )
    client.update_run(run_id, status="RUNNING")
    return client.get_run(run_id)


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
    all_tags = {
        **git.tags(),
        **axes_of(cfg),
        "sweep_id": sweep_id,
        **owner_tags(),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    name = run_name or run_name_for(cfg)
    if resume_run_id:
        mlflow_run = _reopen(client, resume_run_id, cfg)
        name = mlflow_run.info.run_name
        if not (tags or {}).get("sweep_id") and sweep_id == "none":  # a resumed sweep job stays in its sweep
            sweep_id = all_tags["sweep_id"] = mlflow_run.data.tags.get("sweep_id", sweep_id)
        all_tags["iqs.resumes"] = str(int(mlflow_run.data.tags.get("iqs.resumes", "0")) + 1)
    else:
        mlflow_run = client.create_run(experiment_id, tags=resolve_tags(all_tags), run_name=name)
    run = TrackedRun(client, mlflow_run, experiment, sweep_id, cfg)
    run.resumed = bool(resume_run_id)
    try:
        if resume_run_id:
            run.set_tags(all_tags)
        run.log_params_flat(params_config(cfg))
        config_yaml = OmegaConf.to_yaml(OmegaConf.create(params_config(cfg)))
        run.log_text(config_yaml, "config_resumed.yaml" if resume_run_id else "config.yaml")
        if git.diff:
            run.log_text(git.diff, "git.diff")
    except BaseException as exc:
        _fail(run, exc)
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
    run = open_run(cfg, run_name, tags, resume_run_id)
    try:
        yield run
    except BaseException as exc:
        _fail(run, exc)
        raise
    run.end("FINISHED")
