"""Models: timm backbones (with packaged weights), heads, and the QualityModel that joins them."""

from __future__ import annotations

from iqs.models.backbone import Backbone, BackboneInfo, create_backbone, create_backbone_from_cfg
from iqs.models.heads import HEADS, build_head, score_to_class_logits
from iqs.models.quality_model import QualityModel, build_quality_model, make_meta

__all__ = [
    "HEADS",
    "Backbone",
    "BackboneInfo",
    "QualityModel",
    "build_head",
    "build_quality_model",
    "create_backbone",
    "create_backbone_from_cfg",
    "make_meta",
    "score_to_class_logits",
]
