"""Where a run's config becomes objects: every `hydra.utils.instantiate` of `iqs train` is here.

The config groups that mirror an object name it with `_target_` (conf/head, conf/backbone, conf/rebalance,
the optimizer, scheduler, callbacks, trainer, data module and Lightning module); a group whose object needs what only exists at run time (a head
needs the backbone's feature size, an optimizer the parameters) is a partial (`_partial_: true`). What is
built here takes typed arguments; nothing below this module sees a DictConfig of its group.

A target's own check (`build_head`, `backbone_config`, `build_rebalancer`) refuses an unknown key with
the nearest valid one; Hydra wraps such errors in an InstantiationException, which `instantiate_node`
unwraps so that the user reads the check's message (and iqs.train.user_errors its type).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

if TYPE_CHECKING:
    from iqs.models import BackboneConfig, HeadFactory, QualityModel
    from iqs.rebalance.base import Rebalancer
    from iqs.train.datamodule import QualityDataModule
    from iqs.train.module import QualityLitModule


def instantiate_node(node: DictConfig, convert: str = "all", **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(node, **kwargs)`, by default with plain containers (lists, dicts) as
    arguments; an error raised by the target itself comes out as is, not wrapped in Hydra's
    InstantiationException."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_=convert, **kwargs)
    except InstantiationException as err:
        if err.__cause__ is not None:
            raise err.__cause__ from None
        raise


def rebalancer(cfg: DictConfig) -> Rebalancer:
    """conf/rebalance/<name>.yaml's strategy, checked against the head it will train."""
    built = instantiate_node(cfg.rebalance)
    built.check_head(str(cfg.head.name))
    return built


def backbone(cfg: DictConfig) -> BackboneConfig:
    return instantiate_node(cfg.backbone)


def head_overrides(rebalancer: Rebalancer) -> dict[str, Any]:
    """Head options a rebalancer that swaps the loss (balanced_mse) sets: the loss and its parameter."""
    if not rebalancer.regression_loss:
        return {}
    overrides: dict[str, Any] = {"loss": rebalancer.regression_loss}
    if "init_noise_sigma" in rebalancer.loss_params:
        overrides["bmc_init_sigma"] = rebalancer.loss_params["init_noise_sigma"]
    return overrides


def head(cfg: DictConfig, rebalancer: Rebalancer | None = None) -> HeadFactory:
    """conf/head/<name>.yaml as a partial awaiting the feature size and the thresholds; a rebalancer that
    swaps the regression loss (balanced_mse) sets it."""
    factory = instantiate_node(cfg.head)
    overrides = head_overrides(rebalancer) if rebalancer is not None else {}
    return functools.partial(factory, **overrides) if overrides else factory


def thresholds(cfg: DictConfig) -> tuple[float, float]:
    return float(cfg.thresholds.t1), float(cfg.thresholds.t2)


def check(cfg: DictConfig) -> None:
    """Build what is cheap to build (the rebalancer, the backbone's description, the head on a 1-wide
    input) and check the callbacks' switches, nothing else: an unknown key or a bad value in these groups fails here, before any MLflow
    run exists, with its check's message. Groups experiment=personal leaves to its init run (None) are
    skipped."""
    if cfg.get("head") is not None and cfg.get("thresholds") is not None:
        head(cfg, rebalancer(cfg))(in_features=1, t1=float(cfg.thresholds.t1), t2=float(cfg.thresholds.t2))
    if cfg.get("backbone") is not None:
        backbone(cfg)
    check_callbacks(cfg)


def model(cfg: DictConfig, rebalancer: Rebalancer | None) -> QualityModel:
    """A fresh backbone + head, or the model of one experiment=personal role (iqs.train.init_from)."""
    from iqs.models import assemble_model

    if cfg.get("init_from"):
        from iqs.train.init_from import init_checkpoint, init_role, initial_model

        role = init_role(cfg)
        state, meta, source = init_checkpoint(cfg)
        return initial_model(state, meta, role, source)
    return assemble_model(backbone(cfg), head(cfg, rebalancer), thresholds(cfg))


# keys of a callback's node that choose whether and what to build; not arguments of the callback
NOT_CALLBACK_ARGS = ("enabled", "save_last")


def _saves_last(name: str, node: DictConfig) -> bool:
    """Whether callback `name` asks for last.ckpt, which is written to its `dirpath` (refused without one)."""
    if not node.get("save_last", False):
        return False
    if not node.get("dirpath"):
        raise ValueError(
            f"callbacks.{name}.save_last=true writes last.ckpt into the callback's dirpath, and it has none: "
            f"set callbacks.{name}.dirpath (a folder under the job's output folder, e.g. checkpoints)"
        )
    return True


def check_callbacks(cfg: DictConfig) -> None:
    """What `callbacks` would refuse that the config alone shows (nothing is built)."""
    for name, node in cfg.callbacks.items():
        if node.get("enabled", True):
            _saves_last(str(name), node)


def callbacks(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """`cfg.callbacks` in their order, by name, without those `enabled: false` leaves out. A `dirpath` is a
    folder under the job's `output_dir`; a checkpoint's `save_last` adds `last` (last.ckpt every epoch,
    in the same folder) right after it."""
    from omegaconf import OmegaConf

    from iqs.train.checkpoint_io import last_checkpoint

    built: dict[str, Any] = {}
    for name, node in cfg.callbacks.items():
        if not node.get("enabled", True):
            continue
        if name == "progress" and not cfg.trainer.get("enable_progress_bar", True):
            continue  # Lightning refuses a progress-bar callback when the bar is off
        resolved = OmegaConf.to_container(node, resolve=True)
        spec = OmegaConf.create({k: v for k, v in resolved.items() if k not in NOT_CALLBACK_ARGS})
        runtime = {"dirpath": output_dir / str(node.dirpath)} if node.get("dirpath") else {}
        built[str(name)] = instantiate_node(spec, **runtime)
        if _saves_last(str(name), node):
            built["last"] = last_checkpoint(runtime["dirpath"])
    return built


def datamodule(cfg: DictConfig, **runtime: Any) -> QualityDataModule:
    """`cfg.datamodule` (the loader, augmentation and seed) with what exists only at run time: the mixture, the
    model's input spec, the rebalancer, the prepared shards, the within-source batching and the bad-image
    policy. Called on the built partial, not passed to `instantiate`: Hydra would merge them into the config,
    and turn a dataclass among them (the mixture, the spec) into a config node."""
    return instantiate_node(cfg.datamodule)(**runtime)


def lit_module(cfg: DictConfig, **runtime: Any) -> QualityLitModule:
    """`cfg.module` (the optimizer and scheduler partials, the backbone's lr scale, the ranking loss's weight)
    with what exists only at run time: the model, the dataset names and the sources' own thresholds."""
    return instantiate_node(cfg.module)(**runtime)


def trainer(cfg: DictConfig, **runtime: Any) -> Any:
    """`cfg.trainer` with what only exists at run time (callbacks, logger, plugins, output folder)."""
    return instantiate_node(cfg.trainer, convert="none", **runtime)
