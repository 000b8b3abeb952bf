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


SLOW_TEST_TIMEOUT_S = (
    1800  # a first tool-venv install (the OpenCV releases) waits up to iqs.deploy.tool_venvs' lock
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`slow` tests train, export or build tool venvs: they get a longer pytest-timeout than the default."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))


def sqlite_logger(tmp_path: Path, experiment: str, **extra) -> dict:
    """The `logger` section of a test run whose store is tmp_path/mlflow.db (a copy of `migrated_db`)."""
    return {
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "artifact_location": str(tmp_path / "artifacts"),
        "experiment_name": experiment,
        **extra,
    }


def adapter_settings(dataset: str) -> dict:
    """conf/dataset/<dataset>.yaml's settings of its adapter (columns, prefixes, ...), for tests that point
    the adapter at files of their own: the yaml states every key an adapter reads, so tests take them there."""
    from omegaconf import OmegaConf

    from iqs.config import conf_dir
    from iqs.data.mixture_config import DATASET_KEYS  # the keys every dataset has: where its files are

    node = OmegaConf.load(conf_dir() / "dataset" / f"{dataset}.yaml")
    return {k: OmegaConf.to_container(node)[k] for k in node if k not in DATASET_KEYS}


def tiny_quality_model(head: str = "regression"):
    """A seeded tiny timm backbone (no weights, fast) with `head` and thresholds 5/6, in eval mode: the
    model the export, predict, write-xmp and digiKam-install tests export."""
    import torch

    from iqs.models import build_quality_model

    torch.manual_seed(0)
    cfg = {
        "backbone": {"name": "test_efficientnet", "weights": "none"},
        "head": {"name": head},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    return build_quality_model(cfg).eval()


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed-0 test digiKam library (`iqs data build-library`); built once, reused while its manifest
    matches. Modules that need another library (a smaller spec, their own photos) define their own."""
    from iqs.data.demo.library import ensure_library

    return ensure_library(tmp_path_factory.getbasetemp() / "digikam-library", seed=0)


def digikam_cfg(root: Path, name: str, **overrides):
    """conf/dataset/<name>.yaml pointed at `root`, with `overrides` set."""
    from omegaconf import OmegaConf

    c = OmegaConf.load(ROOT / "conf" / "dataset" / f"{name}.yaml")
    c.root = str(root)
    for k, v in overrides.items():
        c[k] = v
    return c


def labels_by_path(table) -> dict[str, int]:
    """path -> class of a digiKam adapter's table."""
    return dict(zip(table["path"], table["raw_score"].astype(int), strict=True))
