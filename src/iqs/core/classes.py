"""The model's classes, defined once: label 0, 1, 2 in this order everywhere (tables, heads, metrics, XMP)."""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("bad", "normal", "good")
NUM_CLASSES = len(CLASS_NAMES)
