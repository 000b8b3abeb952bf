"""Backbone + head, and the `iqs_meta` record that rebuilds the same model for export and predict.

`iqs_meta` (plain dict, JSON/YAML safe) keys: schema, backbone, weights, freeze, channels_last, num_features,
input_size [H, W], mean, std, interpolation, crop_pct, pool (avg | mlsp | mlsp_blocks) and pool_levels
(null = every level; a record without them predates the options and means avg), exportable (false: the
backbone's graph needs operators some digiKam OpenCV lacks; absent = true), head, head_cfg (effective options), thresholds
[t1, t2], class_names, num_bins, score_scale (the head's `score_scale`: "common" 1..10, "class_index" 0..2
for the classification and ordinal heads, "latent" for the rank head), and optionally decision_cuts
[t1, t2]: cuts tuned on validation (iqs.train.decision_cuts) that then class every score instead of the
head's own mapping.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from iqs.core.classes import CLASS_NAMES
from iqs.core.scale import N_BINS
from iqs.models.backbone import (
    Backbone,
    BackboneConfig,
    BackboneInfo,
    backbone_config,
    create_backbone,
    resolve_info,
)
from iqs.models.heads import Batch, Head, Outputs, build_head, score_to_class_logits

# A head with its options bound, awaiting what exists only once the backbone does: called as
# `head(in_features=..., t1=..., t2=...)` (conf/head/*.yaml instantiated with `_partial_: true`).
HeadFactory = Callable[..., Head]

META_SCHEMA = 1
META_KEYS = (
    "schema",
    "backbone",
    "weights",
    "freeze",
    "channels_last",
    "num_features",
    "input_size",
    "mean",
    "std",
    "interpolation",
    "crop_pct",
    "head",
    "head_cfg",
    "thresholds",
    "class_names",
    "num_bins",
    "score_scale",
)


def make_meta(info: BackboneInfo, backbone: Backbone, head_name: str, head: Head) -> dict[str, Any]:
    return {
        "schema": META_SCHEMA,
        "backbone": info.name,
        "weights": info.weights,
        "freeze": backbone.frozen,
        "channels_last": backbone.channels_last,
        "num_features": info.num_features,
        "input_size": list(info.input_size),
        "mean": list(info.mean),
        "std": list(info.std),
        "interpolation": info.interpolation,
        "crop_pct": info.crop_pct,
        "pool": backbone.pool,
        "pool_levels": backbone.pool_levels,
        "head": head_name,
        "head_cfg": dict(head.cfg),
        "thresholds": [head.t1, head.t2],
        "class_names": list(CLASS_NAMES),
        "num_bins": N_BINS,
        "score_scale": head.score_scale,
        # head traits that consumers (training, export, cards, artifacts) read instead of head names
        "has_dist": head.has_dist,
    }


class QualityModel(nn.Module):
    """`forward(x)` -> head outputs; `forward_features(x)` -> pooled (N, num_features), what the head reads.

    Pooled features make it cheap to cache a frozen backbone's output and train heads on the cache.
    """

    def __init__(self, backbone: Backbone, head: Head, meta: Mapping[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.meta: dict[str, Any] = dict(meta)
        cuts = self.meta.get("decision_cuts")
        self.decision_cuts: tuple[float, float] | None = (
            None if cuts is None else (float(cuts[0]), float(cuts[1]))
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.head(features)
        if self.decision_cuts is None:
            return out
        # Tuned cuts replace the head's class mapping for every head (score heads' label thresholds,
        # classification/ordinal argmax): the exported graphs and `iqs predict` then give the tuned classes.
        logits3 = score_to_class_logits(out["score"], *self.decision_cuts, self.head.sharpness)
        return {**out, "logits3": logits3, "probs": logits3.softmax(dim=-1)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(x))

    def loss(self, outputs: Outputs, batch: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.loss(outputs, batch, weights)

    def predict(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.head.predict(outputs)


def _is_meta(record: Mapping[str, Any]) -> bool:
    return isinstance(record.get("backbone"), str) and "head_cfg" in record


def _from_meta(meta: Mapping[str, Any], pretrained: bool) -> QualityModel:
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise KeyError(f"iqs_meta record lacks {missing}; it cannot rebuild the model without guessing")
    if int(meta["schema"]) != META_SCHEMA:
        raise ValueError(f"iqs_meta schema {meta['schema']} is not supported (this code reads {META_SCHEMA})")
    # The checkpoint brings the weights; loading the original source again would be slow or need internet.
    backbone, info = create_backbone(
        name=meta["backbone"],
        weights=meta["weights"] if pretrained else "none",
        freeze=bool(meta["freeze"]),
        channels_last=bool(meta["channels_last"]),
        input_size=meta["input_size"],
        mean=meta["mean"],
        std=meta["std"],
        interpolation=meta["interpolation"],
        pool=str(meta.get("pool", "avg")),
        pool_levels=meta.get("pool_levels"),
    )
    if info.num_features != int(meta["num_features"]):
        raise ValueError(
            f"backbone '{info.name}' has {info.num_features} features, iqs_meta says {meta['num_features']}"
        )
    t1, t2 = (float(t) for t in meta["thresholds"])
    # a record older than one of the head's options lacks it: the option's default fills it in
    head = build_head(str(meta["head"]), info.num_features, t1, t2, **dict(meta["head_cfg"]))
    rebuilt = make_meta(info, backbone, meta["head"], head)
    rebuilt.update(weights=meta["weights"], crop_pct=float(meta["crop_pct"]))
    if "exportable" in meta:
        rebuilt["exportable"] = bool(meta["exportable"])
    if meta.get("decision_cuts") is not None:
        rebuilt["decision_cuts"] = [float(c) for c in meta["decision_cuts"]]
    return QualityModel(backbone, head, rebuilt)


def assemble_model(
    backbone: BackboneConfig, head: HeadFactory, thresholds: tuple[float, float], pretrained: bool = True
) -> QualityModel:
    """The backbone `backbone` describes with the head `head` builds on its features.

    `pretrained=False` skips loading the weight source (random weights) but prepares pixels as if they
    had been loaded (the preprocessing follows the configured source)."""
    module, info = backbone.create(weights=None if pretrained else "none")
    if not pretrained:
        info = resolve_info(
            module.body,
            info.name,
            backbone.weights,
            backbone.input_size,
            backbone.mean,
            backbone.std,
            backbone.interpolation,
            module.pool,
            module.pool_levels,
        )
    t1, t2 = (float(t) for t in thresholds)
    built = head(in_features=info.num_features, t1=t1, t2=t2)
    meta = make_meta(info, module, str(built.head_name), built)
    # conf/backbone/*.yaml `exportable: false`: `iqs export` refuses it (see iqs.deploy.export.onnx_ops)
    meta["exportable"] = bool(backbone.exportable)
    return QualityModel(module, built, meta)


def _options(node: Mapping[str, Any]) -> dict[str, Any]:
    """A config group's options as plain values, without Hydra's `_target_`/`_partial_` keys (they say how
    to build it)."""
    return {str(k): _plain(v) for k, v in node.items() if not str(k).startswith("_")}


def _plain(value: Any) -> Any:
    """Plain dicts and lists (a group handed over as an OmegaConf node reads as a Mapping / Sequence), so
    that what lands in `iqs_meta` is JSON-safe."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


def _from_groups(groups: Mapping[str, Any], pretrained: bool) -> QualityModel:
    for group in ("backbone", "head", "thresholds"):
        if group not in groups:
            raise KeyError(f"model config needs the '{group}' group (conf/{group}/*.yaml)")
    head_options = _options(groups["head"])
    if "name" not in head_options:
        raise KeyError("head config needs a 'name' (one of conf/head/*.yaml)")
    return assemble_model(
        backbone_config(**_options(groups["backbone"])),
        functools.partial(build_head, **head_options),
        (float(groups["thresholds"]["t1"]), float(groups["thresholds"]["t2"])),
        pretrained=pretrained,
    )


def build_quality_model(record: Mapping[str, Any], pretrained: bool | None = None) -> QualityModel:
    """Build from a plain config mapping (groups backbone, head, thresholds) or rebuild from an `iqs_meta` record.

    `iqs train` builds through `assemble_model` from the instantiated groups (iqs.train.build); this is the
    entry for records and for code that holds a mapping (export checks, tests).

    `pretrained` (load the backbone's weight source) defaults to True for a config and False for a record,
    whose checkpoint supplies every weight.
    """
    plain = _plain(record)
    if _is_meta(plain):
        return _from_meta(plain, pretrained=bool(pretrained))
    return _from_groups(plain, pretrained=True if pretrained is None else pretrained)
