"""Every job its own folder: two `iqs train` jobs started in the same second never share one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from iqs.core.config import compose

FROZEN = datetime(2026, 12, 2, 0, 0, 0)


class _FrozenClock(datetime):
    @classmethod
    def now(cls, tz=None):  # noqa: ANN001, ANN206 - datetime's signature
        return FROZEN


def test_folders_outside_hydra_differ_too(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    from iqs.train import pipeline as run

    # outside Hydra: no job config left behind by an earlier test of this process (e.g. a README dry run)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    monkeypatch.setattr(run, "datetime", _FrozenClock)
    cfg = compose("train", [f"paths.root_dir={tmp_path}"])
    first, second = run.job_output_dir(cfg), run.job_output_dir(cfg)
    assert first != second and first.parent == second.parent == tmp_path / "outputs" / "train"
    assert first.name.startswith("2026-12-02_00-00-00_") and second.name.startswith("2026-12-02_00-00-00_")


@pytest.mark.slow
def test_two_jobs_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch, tiny_demo, migrated_db):
    import hydra.core.utils

    from conftest import seed_store
    from iqs.train.run import main
    from test_resume import tiny

    for var in ("MLFLOW_TRACKING_URI", "IQS_CACHE_DIR", "IQS_DATA_DIR", "IQS_SWEEP_ID"):
        monkeypatch.delenv(var, raising=False)
    demo = tiny_demo
    seed_store(tmp_path, migrated_db)
    monkeypatch.setattr(hydra.core.utils, "datetime", _FrozenClock)  # Hydra's ${now:} resolver
    ov = tiny(tmp_path, demo, epochs=1)
    assert main([*ov, "seed=1"]) == 0
    assert main([*ov, "seed=2"]) == 0

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    folders = {r.data.params["seed"]: Path(r.data.tags["output_dir"]) for r in runs}
    assert sorted(folders) == ["1", "2"] and folders["1"] != folders["2"]
    for run in runs:
        out = folders[run.data.params["seed"]]
        assert out.name.startswith("2026-12-02_00-00-00_")  # the same second...
        # ...and each folder holds its own job: its config, its log (naming its run only), its predictions
        assert yaml.safe_load((out / ".hydra" / "config.yaml").read_text())["seed"] == int(
            run.data.params["seed"]
        )
        log_text = (out / "run.log").read_text()
        other = next(r.info.run_id for r in runs if r.info.run_id != run.info.run_id)
        assert run.info.run_id in log_text and other not in log_text
        assert (out / "test_predictions.csv").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
