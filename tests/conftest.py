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
    1800  # a first tool-venv install (the OpenCV releases) waits up to iqs.deploy.compat.tool_venvs' lock
)


def pytest_configure(config: pytest.Config) -> None:
    """`make test` runs two xdist workers on two cores: one torch thread each (and in the processes they
    start), since two 2-thread workers oversubscribe the cores and tiny ops then spin in thread hand-offs
    (see test_heads' one_thread). A thread count the user set wins."""
    if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    # `--dist loadfile` hands out files in the workers' collection order (see pytest_collection_modifyitems),
    # not re-sorted by test count: that sort put the files of few but long tests (the sweeps, the browser, the
    # killed-and-resumed run) at the end, where one worker may run them while the other has nothing left
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.fixture(autouse=True)
def _loggers_enabled() -> None:
    """A Hydra job run in this process with `hydra/job_logging=disabled` applies `disable_existing_loggers`,
    which disables every logger that exists by then, for the rest of the worker; a later test's caplog would
    see none of their records. Each test starts with every logger enabled again."""
    import logging

    for logger in logging.root.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.disabled = False


# Seconds each test file took in a `make test` (tests/file_seconds.json; refresh with
# `IQS_STORE_FILE_SECONDS=1 make test`). Files of few but long tests (the browser, the sweeps, the outages) must
# start first: at the end of the run one worker would run them while the other has nothing left.
FILE_SECONDS = Path(__file__).with_name("file_seconds.json")
_seconds: dict[str, float] = {}


def _file_seconds(path: str, tests: list[pytest.Item], known: dict[str, float]) -> float:
    """The measured seconds of a test file; a file not measured yet counts 5 s per slow test, 0.1 s per other."""
    name = Path(path).name
    if name in known:
        return known[name]
    return sum(5.0 if t.get_closest_marker("slow") else 0.1 for t in tests)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`slow` tests train, export or build tool venvs: they get a longer pytest-timeout than the default.

    Under xdist the files are ordered longest first, by their measured seconds (the order is the same in
    every worker, as xdist requires): the two workers start on the long files and the many short ones fill
    in at the end, so both finish together."""
    import json

    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        known = json.loads(FILE_SECONDS.read_text()) if FILE_SECONDS.is_file() else {}
        files: dict[str, list[pytest.Item]] = {}
        for item in items:
            files.setdefault(item.nodeid.split("::")[0], []).append(item)
        ordered = sorted(files.items(), key=lambda kv: _file_seconds(kv[0], kv[1], known), reverse=True)
        items[:] = [item for _, tests in ordered for item in tests]  # stable: ties keep collection order


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if os.environ.get("IQS_STORE_FILE_SECONDS"):
        name = Path(report.nodeid.split("::")[0]).name
        _seconds[name] = _seconds.get(name, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """With IQS_STORE_FILE_SECONDS set, the controller (or a run without xdist) writes what each file took."""
    import json

    if os.environ.get("IQS_STORE_FILE_SECONDS") and not os.environ.get("PYTEST_XDIST_WORKER") and _seconds:
        ranked = sorted(_seconds.items(), key=lambda kv: -kv[1])
        FILE_SECONDS.write_text(json.dumps({k: round(v, 1) for k, v in ranked}, indent=0) + "\n")


def pytest_unconfigure(config: pytest.Config) -> None:
    """The worker (or the run) exits next: its finalisation would collect the objects of every library the tests
    imported, seconds at the end of `make test` while the other worker may be done (see `iqs.cli.main`)."""
    import gc

    gc.freeze()


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

    from iqs.core.config import conf_dir
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


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """15 reference photos x (pristine + 2 levels of 1 distortion) per source: 135 images of 64 px. Built once
    per session at a fixed path (`ensure_demo` reuses it while its manifest matches), so modules that import
    this fixture share one build. Tests that change its files restore them."""
    from iqs.data.demo.build import DemoSpec, ensure_demo

    spec = DemoSpec(crops_per_photo=1, long_side=64, types_per_source=1, levels_per_type=2)
    return ensure_demo(tmp_path_factory.getbasetemp() / "tiny-demo", 0, spec=spec, progress=False)


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty store with MLflow's schema; copying it saves each test the migrations (seconds of SQLite
    commits). Tests of how a store is created (`test_default_store_is_created_under_mlruns`, concurrent
    jobs) start from nothing instead."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def seed_store(root: Path, migrated_db: Path) -> Path:
    """`root`/mlruns/mlflow.db (the store of a run with paths.root_dir=root) as a copy of `migrated_db`."""
    import shutil

    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(migrated_db, root / "mlruns" / "mlflow.db"))


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
