"""Rebalancing strategies for score-imbalanced training data (conf/rebalance/<name>.yaml).

AVA-like scores pile up around 5 and a plain model learns to predict 5. Each strategy acts through one
or more hooks of `Rebalancer` (see `iqs.rebalance.base` for the call order): undersampling
(`filter_train`), oversampling (`sampler`), loss weights (`sample_weights`) or a different loss
(`regression_loss`). A new strategy is one module here plus `conf/rebalance/<name>.yaml`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from iqs.core.registry import import_submodules
from iqs.rebalance.base import REBALANCERS, RebalanceConfigError, Rebalancer

import_submodules(__name__)  # each strategy module registers itself

__all__ = ["REBALANCERS", "Rebalancer", "RebalanceConfigError", "build_rebalancer"]


def build_rebalancer(cfg: DictConfig | Mapping[str, Any]) -> Rebalancer:
    """Build the strategy named `cfg.name` from its parameters; unknown or misspelt keys are errors."""
    params = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(params, dict)
    name = params.pop("name", None)
    if name is None:
        raise RebalanceConfigError(
            f"rebalance config needs a 'name' (one of {', '.join(REBALANCERS.names())})"
        )
    try:
        cls = REBALANCERS.get(str(name))
    except KeyError as err:
        raise RebalanceConfigError(err.args[0]) from None
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise RebalanceConfigError(
            f"rebalance '{name}': unknown key(s) {unknown}; accepted: {accepted or 'none'}"
        )
    return cls(**params)
