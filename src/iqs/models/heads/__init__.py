"""Prediction heads on pooled backbone features, behind the `HEADS` registry (interface: `base.py`).

Every head is built as `build_head(name, in_features, t1, t2, **options)` (its options: the head's `Options`
dataclass, whose defaults are the ones `head=<name>` composes) and returns a dict from `forward(features)`:
`score` (N,) on the common scale (the classification head: expected class index, 0..2), `logits3` (N, 3)
in the order bad, normal, good, `probs` = softmax(logits3), and `dist` (N, 10) for the distribution head.
`loss(outputs, batch, weights)` reduces per-sample losses as mean(w * loss), so rebalancing weights that
average 1 over the training set keep the loss scale. `predict(outputs)` adds the class `label`.
A new head is one module here plus `conf/head/<name>.yaml` (`_target_: iqs.models.heads.build_head`,
`_partial_: true`, its name and options): the modules register themselves on import.
"""

from __future__ import annotations

from iqs.core.registry import import_submodules
from iqs.models.heads.base import (
    HEADS,
    INPUT_NORMS,
    Batch,
    Head,
    HeadOptions,
    Outputs,
    build_head,
    expectation,
    head_options,
    make_input_norm,
    make_mlp,
    reduce_weighted,
    register_head,
    score_to_class_logits,
)

import_submodules(__name__)

__all__ = [
    "HEADS",
    "Batch",
    "Outputs",
    "INPUT_NORMS",
    "Head",
    "HeadOptions",
    "build_head",
    "expectation",
    "head_options",
    "make_input_norm",
    "make_mlp",
    "reduce_weighted",
    "register_head",
    "score_to_class_logits",
]
