"""Models: timm backbones (with packaged weights), heads, and the QualityModel that joins them.

Names are imported on first use: a module that needs only a checkpoint's record (`iqs.models.checkpoints`,
e.g. for the model card of `iqs compare`) does not import timm and torchvision (~4 s).
"""

from __future__ import annotations

from iqs.core.lazy import lazy_attributes

_WHERE = {
    "Backbone": "backbone",
    "BackboneConfig": "backbone",
    "BackboneInfo": "backbone",
    "backbone_config": "backbone",
    "create_backbone": "backbone",
    "HEADS": "heads",
    "build_head": "heads",
    "score_to_class_logits": "heads",
    "HeadFactory": "quality_model",
    "QualityModel": "quality_model",
    "assemble_model": "quality_model",
    "build_quality_model": "quality_model",
    "make_meta": "quality_model",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_attributes(__name__, _WHERE)
