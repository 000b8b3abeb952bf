"""`init_from=<run id | checkpoint>`: start a run from a trained model instead of from the config's groups.

The init run's `iqs_meta` (read through iqs.models.checkpoints, the one reader) is the model's definition: backbone,
weights, pooling, input size, head and its options, thresholds. `experiment=personal` leaves the backbone,
head and thresholds groups unset, and `fill_model_groups` writes them from the record, so the user never
restates them and the run's params and tags show what was actually trained. A group the user did set must
agree with the record: the personal head reads the init run's frozen features, so another backbone (or an
incompatible head) is refused with a message that says what the run has and what to do.

Roles (`personal.role`) of the three runs of `experiment=personal` (iqs.train.personal):
- `general`: the init model as is, backbone and head (with any decision cuts baked into it);
- `personal`: the init model's backbone and head, the head fine-tuned on the user's labels;
- `scratch`: the init model's backbone, a freshly initialised head of the same shape.
The backbone is always frozen here (its features are cached once and shared by the three runs).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from iqs.data.mixture import ConfigError
from iqs.metrics.label_rule import pair_name
from iqs.models.checkpoints import CheckpointError, read_checkpoint

if TYPE_CHECKING:
    from iqs.models.quality_model import QualityModel

log = logging.getLogger(__name__)

ROLES = ("general", "personal", "scratch")
BACKBONE_PREFIX, HEAD_PREFIX = "backbone.", "head."
# conf/backbone keys that do not change what the backbone computes (they need not match the record)
BACKBONE_FREE_KEYS = ("channels_last", "exportable")


class InitFromError(ConfigError):
    """`init_from` names nothing usable, or the config asks for another model than the init run's.

    A configuration error (iqs.train.user_errors): one line for the user, and a sweep goes on."""


def resolve_checkpoint(spec: str, cfg: Any, download_dir: Path) -> Path:
    """A `.ckpt` path as is; an MLflow run id -> its best checkpoint artifact, downloaded to `download_dir`."""
    path = Path(str(spec)).expanduser()
    if path.suffix == ".ckpt" or path.is_file():
        if not path.is_file():
            raise InitFromError(f"init_from: checkpoint not found: {path}")
        return path
    import mlflow
    from mlflow.exceptions import MlflowException

    from iqs.deploy.export.exporter import ExportError, find_checkpoint_artifact
    from iqs.tracking.store import tracking_uri_for

    uri = tracking_uri_for(cfg)
    client = mlflow.MlflowClient(uri)
    try:
        run = client.get_run(str(spec))
        artifact = find_checkpoint_artifact(client, run.info.run_id)
    except (MlflowException, ExportError) as err:
        raise InitFromError(
            f"init_from={spec}: not a checkpoint file and no usable MLflow run in {uri} ({err}). "
            "Pass the run id of an `iqs train` run (see `iqs compare` or the MLflow UI) or a .ckpt path"
        ) from None
    download_dir.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path=artifact, dst_path=str(download_dir), tracking_uri=uri
    )
    log.info("init_from: run %s, checkpoint %s", run.info.run_id, artifact)
    return Path(local)


def _target(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def model_groups(meta: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The backbone, head and thresholds config groups that describe the model of an `iqs_meta` record
    (with the `_target_`s of conf/backbone and conf/head, so that the groups instantiate like theirs)."""
    from iqs.models import backbone_config, build_head

    t1, t2 = (float(t) for t in meta["thresholds"])
    backbone = {
        "_target_": _target(backbone_config),
        "name": meta["backbone"],
        "weights": meta["weights"],
        "freeze": True,
        "channels_last": bool(meta.get("channels_last", True)),
        "input_size": list(meta["input_size"]),
        "mean": list(meta["mean"]),
        "std": list(meta["std"]),
        "interpolation": meta["interpolation"],
        "pool": str(meta.get("pool", "avg")),
        "pool_levels": meta.get("pool_levels"),
        "exportable": bool(meta.get("exportable", True)),
    }
    return {
        "backbone": backbone,
        "head": {
            "_target_": _target(build_head),
            "_partial_": True,
            "name": meta["head"],
            **dict(meta["head_cfg"]),
        },
        "thresholds": {"name": pair_name(t1, t2), "t1": t1, "t2": t2},
    }


def _same(asked: Any, have: Any) -> bool:
    if isinstance(asked, list | tuple) and isinstance(have, list | tuple):
        return len(asked) == len(have) and all(_same(a, h) for a, h in zip(asked, have, strict=True))
    if isinstance(have, list | tuple) and len(set(map(str, have))) == 1:  # input_size 299 == [299, 299]
        return _same(asked, have[0])
    if isinstance(asked, int | float) and isinstance(have, int | float) and not isinstance(asked, bool):
        return float(asked) == float(have)
    return asked == have


def check_against(cfg: DictConfig, meta: Mapping[str, Any], source: str) -> None:
    """Refuse a config whose backbone/head/thresholds (where set) differ from the init run's model."""
    wanted = model_groups(meta)
    problems = []
    for group, have in wanted.items():
        asked = cfg.get(group)
        if asked is None:
            continue
        asked = OmegaConf.to_container(asked, resolve=True) if isinstance(asked, DictConfig) else asked
        for key, value in dict(asked).items():
            if (
                value is None
                or str(key).startswith("_")
                or (group == "backbone" and key in BACKBONE_FREE_KEYS)
            ):
                continue  # null = "from the weights' metadata": the record has the resolved value
            if group == "backbone" and key == "freeze":
                if not value:
                    problems.append("backbone.freeze=false: the personal head trains on frozen features")
                continue
            if key not in have:
                continue  # e.g. a head option the record's head does not have
            if not _same(value, have[key]):
                problems.append(f"{group}.{key}={value} (the init run has {have[key]})")
    if problems:
        raise InitFromError(
            f"init_from={source}: the config asks for another model than the init run's: "
            + "; ".join(problems)
            + ". The backbone, head and thresholds come from the init run: leave them unset, or choose an "
            "init run trained with them"
        )


def fill_model_groups(cfg: DictConfig, meta: Mapping[str, Any], source: str) -> None:
    """Check the config against the init run's model, then set backbone/head/thresholds from its record."""
    check_against(cfg, meta, source)
    with open_dict(cfg):
        for group, values in model_groups(meta).items():
            cfg[group] = values


def init_meta(meta: Mapping[str, Any], role: str) -> dict[str, Any]:
    """The record a role's model is built from: frozen backbone; the general model keeps its baked cuts,
    a trained head is cut afresh (by its own thresholds, or by the cuts this run tunes and bakes)."""
    out = dict(meta)
    out["freeze"] = True
    if role != "general":
        out.pop("decision_cuts", None)
    return out


def init_role(cfg: DictConfig) -> str:
    """`personal.role` (default personal), checked."""
    role = str(OmegaConf.select(cfg, "personal.role", default="personal"))
    if role not in ROLES:
        raise InitFromError(f"personal.role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def init_checkpoint(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(state_dict, iqs_meta, path) of the init run's checkpoint: `personal.checkpoint` when the pipeline
    downloaded it already, else `init_from` (a .ckpt path or an MLflow run id)."""
    with tempfile.TemporaryDirectory(prefix="iqs-init-") as tmp:
        ckpt = OmegaConf.select(cfg, "personal.checkpoint", default=None)
        ckpt = Path(str(ckpt)) if ckpt else resolve_checkpoint(str(cfg.init_from), cfg, Path(tmp))
        state, meta = read_checkpoint(ckpt)
    return state, meta, ckpt


def initial_model(state: Mapping[str, Any], meta: Mapping[str, Any], role: str, source: Path) -> QualityModel:
    """The model a role of `experiment=personal` starts from (see the module docstring), from the init
    run's weights `state` and record `meta` (read from `source`).

    A scratch head is the freshly built one: its initialisation follows the run's seed like any head's.
    """
    from iqs.models import build_quality_model

    model = build_quality_model(init_meta(meta, role))
    if role == "scratch":
        state = {k: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    missing = [k for k in missing if role != "scratch" or k.startswith(BACKBONE_PREFIX)]
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: state_dict does not match the model its iqs_meta describes "
            f"(missing e.g. {sorted(missing)[:3]}, unexpected e.g. {sorted(unexpected)[:3]})"
        )
    log.info("init_from %s: %s model (%s + %s head)", source.name, role, meta["backbone"], meta["head"])
    return model
