"""The two exported graphs, as thin modules around a `QualityModel` (input adapter + model + output pick).

Both take digiKam's pixels (RGB, 299x299, [-1, 1]); `DigikamToBackbone` moves them to the backbone's own
resolution and mean/std inside the graph. Which file each becomes is iqs.core.export_profiles'.

- `contract`: (1, 3, 299, 299) -> (1, 3) softmax probabilities in the order bad, normal, good: digiKam's
  contract. digiKam only takes the argmax, which is the run's class for every head (score heads go through
  `score_to_class_logits`).
- `full`: (N, 3, 299, 299) -> `score` (N,), `probs` (N, 3) and, for the distribution head, `dist` (N, 10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from iqs.core.classes import NUM_CLASSES
from iqs.core.preprocess import DigikamToBackbone
from iqs.models.checkpoints import has_dist


class DigikamGraph(nn.Module):
    def __init__(self, model: nn.Module, meta: dict) -> None:
        super().__init__()
        self.adapt = DigikamToBackbone.from_meta(meta)
        self.model = model

    def forward(self, x):
        return self.model(self.adapt(x))["probs"]


class FullGraph(nn.Module):
    def __init__(self, model: nn.Module, meta: dict, with_dist: bool) -> None:
        super().__init__()
        self.adapt = DigikamToBackbone.from_meta(meta)
        self.model = model
        self.with_dist = with_dist

    def forward(self, x):
        out = self.model(self.adapt(x))
        if self.with_dist:
            return out["score"], out["probs"], out["dist"]
        return out["score"], out["probs"]


@dataclass(frozen=True)
class Graph:
    """What an export profile traces (iqs.core.export_profiles names it): the wrapper and its outputs."""

    name: str
    build: Callable[[nn.Module, dict], nn.Module]  # (model, meta) -> the wrapper
    outputs: Callable[[bool], list[str]]  # with_dist -> output names, in the wrapper's order
    batch: int | None  # the fixed batch size; None: any (a dynamic batch axis)
    fixed: dict[str, tuple[int, ...]] = field(default_factory=dict)  # output -> its fixed shape


CONTRACT = Graph(
    "contract", DigikamGraph, lambda with_dist: ["probs"], batch=1, fixed={"probs": (1, NUM_CLASSES)}
)
FULL = Graph(
    "full",
    lambda model, meta: FullGraph(model, meta, with_dist=has_dist(meta)),
    lambda with_dist: ["score", "probs", "dist"] if with_dist else ["score", "probs"],
    batch=None,
)
GRAPHS: dict[str, Graph] = {g.name: g for g in (CONTRACT, FULL)}


def graph(name: str) -> Graph:
    if name not in GRAPHS:
        raise ValueError(f"unknown graph '{name}'; expected one of {', '.join(GRAPHS)}")
    return GRAPHS[name]


def output_names(name: str, with_dist: bool) -> list[str]:
    return graph(name).outputs(with_dist)


def wrap(model: nn.Module, meta: dict, name: str) -> nn.Module:
    return graph(name).build(model, meta).eval()
