"""iqs-digikam: training pipeline for digiKam's Image Quality Sorter model."""

import os

# albumentations' import otherwise blocks on a network version check
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
