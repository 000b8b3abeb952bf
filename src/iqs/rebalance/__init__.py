"""Rebalancing strategies for score-imbalanced training data (conf/rebalance/<name>.yaml).

AVA-like scores pile up around 5 and a plain model learns to predict 5. Each strategy acts through one
or more hooks of `Rebalancer` (see `iqs.rebalance.base` for the call order): undersampling
(`filter_train`), oversampling (`sampler`), loss weights (`sample_weights`) or a different loss
(`regression_loss`). A new strategy is one module here plus `conf/rebalance/<name>.yaml` (`_target_: iqs.rebalance.build_rebalancer`,
its name and parameters).
"""

from __future__ import annotations

import inspect
from typing import Any

from iqs.core.registry import import_submodules
from iqs.models.options import unknown_key_error
from iqs.rebalance.base import REBALANCERS, RebalanceConfigError, Rebalancer

import_submodules(__name__)  # each strategy module registers itself

__all__ = ["REBALANCERS", "Rebalancer", "RebalanceConfigError", "build_rebalancer"]


def build_rebalancer(name: str, **params: Any) -> Rebalancer:
    """The strategy `name` with its parameters: conf/rebalance/*.yaml's `_target_`.

    Unknown names and misspelt keys are RebalanceConfigErrors naming the nearest valid one (a strategy's
    parameters are its constructor's keyword arguments, their defaults the yaml's values)."""
    try:
        cls = REBALANCERS.get(str(name))
    except KeyError as err:
        raise RebalanceConfigError(err.args[0]) from None
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in params:
        if key not in accepted:
            raise RebalanceConfigError(unknown_key_error(f"rebalance '{name}'", key, accepted))
    return cls(**params)
