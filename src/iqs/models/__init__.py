"""Models: timm backbones (with packaged weights), heads, and the QualityModel that joins them."""

from __future__ import annotations

from iqs.models.backbone import Backbone, BackboneConfig, BackboneInfo, backbone_config, create_backbone
from iqs.models.heads import HEADS, build_head, score_to_class_logits
from iqs.models.quality_model import (
    HeadFactory,
    QualityModel,
    assemble_model,
    build_quality_model,
    make_meta,
)

__all__ = [
    "HEADS",
    "Backbone",
    "BackboneConfig",
    "BackboneInfo",
    "HeadFactory",
    "QualityModel",
    "assemble_model",
    "backbone_config",
    "build_head",
    "build_quality_model",
    "create_backbone",
    "make_meta",
    "score_to_class_logits",
]
