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

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from iqs.core.classes import CLASS_NAMES
from iqs.core.scale import N_BINS
from iqs.models.backbone import (
    Backbone,
    BackboneInfo,
    _defaults_yaml,
    create_backbone,
    create_backbone_from_cfg,
    resolve_info,
)
from iqs.models.heads import Batch, Head, Outputs, build_head, plain_cfg, score_to_class_logits

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
        logits3 = score_to_class_logits(
            out["score"], *self.decision_cuts, float(self.head.cfg.get("sharpness", 4.0))
        )
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
    head = build_head(meta["head"], info.num_features, meta["head_cfg"], t1, t2)
    rebuilt = make_meta(info, backbone, meta["head"], head)
    rebuilt.update(weights=meta["weights"], crop_pct=float(meta["crop_pct"]))
    if "exportable" in meta:
        rebuilt["exportable"] = bool(meta["exportable"])
    if meta.get("decision_cuts") is not None:
        rebuilt["decision_cuts"] = [float(c) for c in meta["decision_cuts"]]
    return QualityModel(backbone, head, rebuilt)


def _from_cfg(cfg: Mapping[str, Any], pretrained: bool) -> QualityModel:
    for group in ("backbone", "head", "thresholds"):
        if group not in cfg:
            raise KeyError(f"model config needs the '{group}' group (conf/{group}/*.yaml)")
    backbone_cfg, head_cfg = plain_cfg(cfg["backbone"]), plain_cfg(cfg["head"])
    backbone, info = create_backbone_from_cfg(backbone_cfg, weights=None if pretrained else "none")
    if not pretrained:
        # Preprocessing still follows the configured weight source, as if they had been loaded.
        info = resolve_info(
            backbone.body,
            info.name,
            str(backbone_cfg.get("weights", _defaults_yaml()["weights"])),  # conf/backbone_defaults.yaml
            backbone_cfg.get("input_size"),
            backbone_cfg.get("mean"),
            backbone_cfg.get("std"),
            backbone_cfg.get("interpolation"),
            backbone.pool,
            backbone.pool_levels,
        )
    head_name = head_cfg.pop("name", None)
    if head_name is None:
        raise KeyError("head config needs a 'name' (one of conf/head/*.yaml)")
    head = build_head(
        head_name, info.num_features, head_cfg, float(cfg["thresholds"]["t1"]), float(cfg["thresholds"]["t2"])
    )
    meta = make_meta(info, backbone, head_name, head)
    # conf/backbone/*.yaml `exportable: false`: `iqs export` refuses it (see iqs.deploy.export.onnx_ops)
    meta["exportable"] = bool(backbone_cfg.get("exportable", True))
    return QualityModel(backbone, head, meta)


def build_quality_model(meta_or_cfg: Mapping[str, Any], pretrained: bool | None = None) -> QualityModel:
    """Build from a composed config (groups backbone, head, thresholds) or rebuild from an `iqs_meta` record.

    `pretrained` (load the backbone's weight source) defaults to True for a config and False for a record,
    whose checkpoint supplies every weight.
    """
    record = plain_cfg(meta_or_cfg) if isinstance(meta_or_cfg, DictConfig) else dict(meta_or_cfg)
    if _is_meta(record):
        return _from_meta(record, pretrained=bool(pretrained))
    return _from_cfg(record, pretrained=True if pretrained is None else pretrained)
