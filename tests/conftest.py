from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("IQS_REALDATA", ROOT.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """../shared/realdata (or $IQS_REALDATA); tests that need it are skipped when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real annotation files not found at {REALDATA}")
    return REALDATA
