"""The `Head` interface, the `HEADS` registry and the building blocks every head shares.

The contract (outputs, loss reduction) is described in the package docstring, `iqs.models.heads`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from iqs.core.registry import Registry
from iqs.models.options import check_options

HEADS: Registry[type[Head]] = Registry("head")
# what a head returns (score, logits3, probs[, dist]) and the batch its loss reads (score, label, dist, ...)
Outputs = dict[str, torch.Tensor]
Batch = Mapping[str, torch.Tensor]


def _round_down(value: float, dtype: torch.dtype) -> float:
    """The largest `dtype` number <= value: for `dtype` scores, s <= value iff s <= that number."""
    np_dtype = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}[dtype]
    cast = np_dtype(value)
    if float(cast) > value:
        cast = np.nextafter(cast, np_dtype(-np.inf))
    return float(cast)


def score_to_class_logits(score: torch.Tensor, t1: float, t2: float, sharpness: float = 4.0) -> torch.Tensor:
    """(N,) scores -> (N, 3) logits bad = k(t1-s), normal = k*min(s-t1, t2-s), good = k(s-t2).

    argmax reproduces `assign_labels`: s <= t1 bad, t1 < s <= t2 normal, else good (a tie picks the lower
    class, like argmax). The thresholds are rounded down to the score's precision so the comparison is
    exact even for thresholds like 5.3 that float32 cannot represent: IEEE subtraction of two floats is zero
    only when they are equal and otherwise keeps the sign of the exact difference.

    min(a, b) is written a - relu(a - b): `torch.minimum` exports to a `Min` node, which OpenCV's TensorFlow
    importer (digiKam 8.0-8.4) lacks, while Relu and Sub load everywhere. The argmax is unchanged: with
    a = s-t1, b = t2-s, the form returns a exactly when a <= b (s <= t1: normal = -bad, a tie at s = t1 picks
    bad); for t1 < s <= t2 it is >= 0 > bad, and 0 = good at s = t2 (a tie, normal); for s > t2 it is
    a - round(a - b) <= 0 < good, since rounding is monotone and a - b > a.
    """
    if not t1 < t2:
        raise ValueError(f"thresholds must satisfy t1 < t2, got ({t1}, {t2})")
    if sharpness <= 0:
        raise ValueError(f"sharpness must be > 0, got {sharpness}")
    if score.dtype not in (torch.float32, torch.float64):
        score = score.float()  # bf16/fp16 under autocast: compare in float32
    lo, hi = _round_down(t1, score.dtype), _round_down(t2, score.dtype)
    # (N, 1) columns joined by cat rather than (N,) vectors stacked: OpenCV 4.6 has no 1-D element-wise ops
    s = score.reshape(-1, 1)
    a = s - lo
    normal = a - torch.relu(a - (hi - s))
    return sharpness * torch.cat([lo - s, normal, s - hi], dim=-1)


def expectation(probs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(N, K) probabilities, (K,) values -> (N,) expected value, as operators every digiKam OpenCV runs.

    `probs @ values` exports a 2-D x 1-D `MatMul`, which OpenCV 5.0 refuses at run time; a (K, 1) column
    and a `Reshape` (not `squeeze`, whose opset-13 `Squeeze` OpenCV 4.6 cannot import) compute the same.
    """
    return (probs @ values.to(probs.dtype).reshape(-1, 1)).reshape(-1)


INPUT_NORMS = ("none", "batchnorm")
INPUT_NORM_EPS = 1e-10


def make_input_norm(kind: str, in_features: int) -> list[nn.Module]:
    """Per-feature standardisation of the head's input: `batchnorm` = BatchNorm1d without affine parameters.

    Pooled features of different levels differ in scale by orders of magnitude (early-stage means vs
    late-stage standard deviations); standardising them makes the head's optimisation well-conditioned,
    as for a ridge or SVR on z-scored features. `momentum=None` keeps the running statistics a cumulative
    average over every training batch (of the batch means and unbiased batch variances), an estimate of
    the training set's mean and variance rather than an EMA of the last batches; at inference (eval mode)
    they are fixed buffers, saved in the checkpoint and exported.
    """
    if kind == "none":
        return []
    if kind == "batchnorm":
        # eps far below BatchNorm's 1e-5: the std pooling of a quiet stage gives variances near 1e-6,
        # which the default eps would flatten instead of standardising.
        return [nn.BatchNorm1d(in_features, eps=INPUT_NORM_EPS, affine=False, momentum=None)]
    hint = difflib.get_close_matches(str(kind), INPUT_NORMS, n=1)
    did_you_mean = f" Did you mean '{hint[0]}'?" if hint else ""
    raise ValueError(f"unknown input_norm '{kind}'.{did_you_mean} Known: {', '.join(INPUT_NORMS)}")


def make_mlp(
    in_features: int, hidden: Sequence[int], dropout: float, out_features: int, input_norm: str = "none"
) -> nn.Sequential:
    """[input norm] -> Dropout -> [Linear -> GELU -> Dropout]* -> Linear; `hidden=[]` is NIMA's dropout + linear.

    `input_norm`: none | batchnorm (see `make_input_norm`).
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    layers: list[nn.Module] = make_input_norm(input_norm, in_features)
    width = in_features
    for h in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(width, int(h)), nn.GELU()]
        width = int(h)
    layers += [nn.Dropout(dropout), nn.Linear(width, out_features)]
    return nn.Sequential(*layers)


def reduce_weighted(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return per_sample.mean()
    weights = weights.to(per_sample.dtype).reshape(-1)
    if weights.shape != per_sample.shape:
        raise ValueError(f"sample weights of shape {tuple(weights.shape)} for {per_sample.shape[0]} samples")
    return (per_sample * weights).mean()


@dataclass(frozen=True)
class HeadOptions:
    """The options every head has; a head's own `Options` subclass adds its own (and may change a default).

    The defaults written here are the ones `head=<name>` composes (conf/head/<name>.yaml states the same
    values so that they become MLflow params; tests/test_config_groups.py keeps the two equal)."""

    hidden: list[int] = field(default_factory=list)  # MLP widths; [] = linear layer
    dropout: float = 0.2
    input_norm: str = "none"  # none | batchnorm (make_input_norm)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples) for `iqs_meta`'s `head_cfg`."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Head(nn.Module):
    """Base: subclasses implement forward / loss and name their `Options` dataclass (defaults included)."""

    # What `score` means, recorded in the meta as `score_scale`: "common" (1..10, comparable to the labels'
    # thresholds), "class_index" (expected class index 0..2) or "latent" (an unscaled ranking score).
    score_scale: str = "common"
    # True when the loss compares samples of a batch with each other (no per-sample loss exists).
    pairwise: bool = False
    # True when the head also predicts a 10-bin score distribution (`dist`), recorded as `has_dist`.
    has_dist: bool = False
    # The scalar regression losses this head can train with (rebalancers that swap the loss check it).
    regression_losses: tuple[str, ...] = ()
    # the head's options and their defaults
    Options: type[HeadOptions] = HeadOptions

    def __init__(self, in_features: int, t1: float, t2: float, options: HeadOptions | None = None) -> None:
        super().__init__()
        if not t1 < t2:
            raise ValueError(f"thresholds must satisfy t1 < t2, got ({t1}, {t2})")
        self.in_features = int(in_features)
        self.t1, self.t2 = float(t1), float(t2)
        self.options = self.Options() if options is None else options
        if not isinstance(self.options, self.Options):
            raise TypeError(
                f"head '{self.head_name}' takes {self.Options.__name__}, got {type(options).__name__}"
            )
        # Effective options (defaults filled in), as recorded in the checkpoint metadata.
        self.cfg: dict[str, Any] = self.options.as_dict()

    @property
    def head_name(self) -> str:
        return getattr(type(self), "registry_name", type(self).__name__)

    def class_logits(self, score: torch.Tensor) -> torch.Tensor:
        return score_to_class_logits(score, self.t1, self.t2, self.sharpness)

    @property
    def sharpness(self) -> float:
        """Slope of the class logits cut from the score (score heads have the option; 4 otherwise)."""
        return float(getattr(self.options, "sharpness", 4.0))

    def options_mlp(self, out_features: int) -> nn.Sequential:
        """`make_mlp` from the head's own `hidden`, `dropout` and `input_norm` options."""
        o = self.options
        return make_mlp(self.in_features, list(o.hidden), float(o.dropout), out_features, str(o.input_norm))

    def score_outputs(self, score: torch.Tensor) -> dict[str, torch.Tensor]:
        """`score`, `logits3` and `probs` of a head whose classes come from cutting its (N,) score."""
        logits3 = self.class_logits(score)
        return {"score": score, "logits3": logits3, "probs": logits3.softmax(dim=-1)}

    def loss(self, outputs: Outputs, batch: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Detached `score`, `probs`, class `label` (argmax of logits3) and `dist` where the head has one."""
        pred = {k: outputs[k].detach() for k in ("score", "probs", "dist") if k in outputs}
        pred["label"] = outputs["logits3"].argmax(dim=-1)
        return pred


def register_head(name: str):
    def deco(cls: type[Head]) -> type[Head]:
        cls.registry_name = name
        return HEADS.register(name)(cls)

    return deco


def build_head(name: str, in_features: int, t1: float, t2: float, **options: Any) -> Head:
    """Head `name` with its options (unset ones take the defaults of the head's `Options`).

    conf/head/<name>.yaml targets this with `_partial_: true`: the composed options are bound there and
    `in_features` (known once the backbone exists) and the thresholds are given here."""
    return HEADS.get(name)(in_features, t1, t2, head_options(name, **options))


def head_options(name: str, **options: Any) -> HeadOptions:
    """The checked `Options` of head `name`: an unknown head or option names the nearest valid one."""
    cls = HEADS.get(name)
    check_options(f"head '{name}'", options, [f.name for f in fields(cls.Options)])
    return cls.Options(**options)
