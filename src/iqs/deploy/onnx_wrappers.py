"""The two exported graphs, as thin modules around a `QualityModel` (input adapter + model + output pick).

Both take digiKam's pixels (RGB, 299x299, [-1, 1]); `DigikamToBackbone` moves them to the backbone's own
resolution and mean/std inside the graph.

- `digikam`: (1, 3, 299, 299) -> (1, 3) softmax probabilities in the order bad, normal, good. digiKam only
  takes the argmax, which is the run's class for every head (score heads go through `score_to_class_logits`).
- `full`: (N, 3, 299, 299) -> `score` (N,), `probs` (N, 3) and, for the distribution head, `dist` (N, 10).
"""

from __future__ import annotations

from torch import nn

from iqs.deploy.preprocess import DigikamToBackbone

# digikam_tf: the digikam graph as a TensorFlow frozen graph for digiKam 8.0-8.4 (deploy/tf_export.py)
TF_PROFILE = "digikam_tf"
PROFILES = ("digikam", "full", TF_PROFILE)


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


def output_names(profile: str, with_dist: bool) -> list[str]:
    if profile == "digikam":
        return ["probs"]
    return ["score", "probs", "dist"] if with_dist else ["score", "probs"]


def wrap(model: nn.Module, meta: dict, profile: str) -> nn.Module:
    if profile == "digikam":
        return DigikamGraph(model, meta).eval()
    if profile == "full":
        return FullGraph(model, meta, with_dist=has_dist(meta)).eval()
    raise ValueError(f"unknown export profile '{profile}'; expected one of {', '.join(PROFILES)}")


def has_dist(meta: dict) -> bool:
    # records written before the trait existed name the head instead
    return bool(meta.get("has_dist", str(meta.get("head", "")) == "distribution"))
