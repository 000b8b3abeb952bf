"""No rebalancing: the baseline every strategy is compared with."""

from __future__ import annotations

from iqs.rebalance.base import REBALANCERS, Rebalancer


@REBALANCERS.register("none")
class NoRebalance(Rebalancer):
    """Plain training on the mixture as it is (AVA-like data then pulls predictions towards 5)."""

    name = "none"
