"""What the run's config says about building its parts: the ranking loss, the
training batches, where to embed, and which sources are already prepared (`iqs data prepare`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from iqs.data.mixture import Mixture
    from iqs.data.prepare import PreparedImages

log = logging.getLogger(__name__)


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


def _cuts_as_checked(cfg: DictConfig) -> object:
    """decision_cuts, with the target that experiment=personal fills in later (the user's class shares in
    the training split, `personal.cuts_from_train_shares`) stood in by equal shares: checked for the rest."""
    cuts = cfg.get("decision_cuts")
    personal = cfg.get("personal") or {}
    if cuts is None or cuts.get("target") is not None or not personal.get("cuts_from_train_shares"):
        return cuts
    return {**OmegaConf.to_container(cuts, resolve=True), "target": [1 / 3, 1 / 3, 1 / 3]}


def check_values(cfg: DictConfig) -> None:
    """Refuse, before any MLflow run exists, the values that the config alone shows to be wrong: the
    mixture (keys, ordered thresholds, `data.fold` within `data.folds`, source settings), the loss, the
    decision cuts, the monitor and the loader. Each check is the one its stage runs later; here a mistake
    costs one line instead of a FAILED run."""
    from iqs.data.mixture import ConfigError, checked_config
    from iqs.train import build
    from iqs.train.decision_cuts import CutsConfig

    if cfg.get("thresholds") is not None:  # experiment=personal takes them from its init run, later
        checked_config(cfg.data, cfg.thresholds)  # raises ConfigError itself
    try:
        build.check(cfg)  # head, backbone and rebalance options (a RebalanceConfigError is a ValueError)
        if cfg.get("head") is not None:  # likewise the head
            rank_weight(cfg)
            within_source_batches(cfg)
        CutsConfig.from_cfg(_cuts_as_checked(cfg))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
    if str(cfg.monitor.mode) not in ("min", "max"):
        raise ConfigError(f"monitor.mode must be min or max, got {cfg.monitor.mode!r}")
    for key in ("batch_size", "eval_batch_size"):
        value = cfg.loader.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"loader.{key} must be a positive integer, got {value!r}")
    patience = cfg.callbacks.early_stopping.get("patience", 0)
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise ConfigError(f"callbacks.early_stopping.patience must be an integer >= 0, got {patience!r}")


def extraction_device(cfg: DictConfig) -> str:
    """Embed on the GPU when the trainer will use one (the trainer itself only starts at `fit`)."""
    import torch

    wants_gpu = str(cfg.trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
    return "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"


def prepared_images(cfg: DictConfig, mixture: Mixture) -> dict[str, PreparedImages]:
    """The sources that `iqs data prepare` has decoded already (shards are only read, never built here)."""
    from iqs.data.prepare import PreparedImages, source_dir
    from iqs.data.prepared_folders import options_of, warn_unused
    from iqs.data.shard_format import ShardFormat

    p = cfg.get("prepare") or {}
    if not p.get("use", True):
        return {}
    fmt = ShardFormat.from_cfg(p)
    found = {}
    for name, root in mixture.roots.items():
        folder = source_dir(cfg.paths.cache_dir, name, root, int(p.short_side), fmt)
        if folder.is_dir():
            found[name] = PreparedImages(folder)
            log.info("reading %s from %d prepared %s images in %s", name, len(found[name]), fmt.name, folder)
        else:
            wanted = options_of({"short_side": p.short_side, "format": fmt.name, "jpeg_quality": fmt.quality})
            warn_unused(cfg.paths.cache_dir, name, root, wanted)
    return found
