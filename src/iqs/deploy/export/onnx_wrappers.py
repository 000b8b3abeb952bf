"""The two exported graphs, as thin modules around a `QualityModel` (input adapter + model + output pick).

Both take digiKam's pixels (RGB, 299x299, [-1, 1]); `DigikamToBackbone` moves them to the backbone's own
resolution and mean/std inside the graph. Which file each becomes is iqs.deploy.export.profiles'.

- `contract`: (1, 3, 299, 299) -> (1, 3) softmax probabilities in the order bad, normal, good: digiKam's
  contract. digiKam only takes the argmax, which is the run's class for every head (score heads go through
  `score_to_class_logits`).
- `full`: (N, 3, 299, 299) -> `score` (N,), `probs` (N, 3) and, for the distribution head, `dist` (N, 10).
"""

from __future__ import annotations

from torch import nn

from iqs.core.preprocess import DigikamToBackbone
from iqs.models.checkpoints import has_dist

GRAPHS = ("contract", "full")


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


def output_names(graph: str, with_dist: bool) -> list[str]:
    if graph == "contract":
        return ["probs"]
    return ["score", "probs", "dist"] if with_dist else ["score", "probs"]


def wrap(model: nn.Module, meta: dict, graph: str) -> nn.Module:
    if graph == "contract":
        return DigikamGraph(model, meta).eval()
    if graph == "full":
        return FullGraph(model, meta, with_dist=has_dist(meta)).eval()
    raise ValueError(f"unknown graph '{graph}'; expected one of {', '.join(GRAPHS)}")
