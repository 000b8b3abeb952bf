"""One MLflow store resolver: explicit logger.tracking_uri > $MLFLOW_TRACKING_URI > sqlite under mlruns/."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from iqs import cli
from iqs.core.config import compose
from iqs.deploy.export import exporter as export
from iqs.report import ui
from iqs.tracking.store import tracking_uri_for

COMMANDS = ("train", "export", "predict", "compare", "ui")


@pytest.mark.slow
def test_precedence_is_the_same_for_every_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in COMMANDS:  # default: the SQLite file under mlruns/, made absolute
        assert tracking_uri_for(compose(name)) == f"sqlite:///{tmp_path}/mlruns/mlflow.db", name
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env/store.db")
    for name in COMMANDS:  # the variable beats the default
        assert tracking_uri_for(compose(name)) == f"sqlite:///{tmp_path}/env/store.db", name
    explicit = f"sqlite:///{tmp_path}/explicit.db"
    for name in COMMANDS:  # an explicit key beats the variable
        assert tracking_uri_for(compose(name, [f"logger.tracking_uri={explicit}"])) == explicit, name
    # plain dicts (tests, scripts) resolve the same way
    assert tracking_uri_for({"logger": {"tracking_uri": explicit}}) == explicit
    assert tracking_uri_for({"paths": {"mlruns_dir": "elsewhere"}}) == f"sqlite:///{tmp_path}/env/store.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert (
        tracking_uri_for({"paths": {"mlruns_dir": "elsewhere"}})
        == f"sqlite:///{tmp_path}/elsewhere/mlflow.db"
    )
    assert (tmp_path / "elsewhere").is_dir()  # the store's folder exists before MLflow opens it
    assert tracking_uri_for({"logger": {"tracking_uri": "http://mlflow:5000"}}) == "http://mlflow:5000"


def test_export_reads_the_run_from_the_explicit_store_not_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_db: Path
) -> None:
    explicit = f"sqlite:///{shutil.copy(migrated_db, tmp_path / 'explicit.db')}"
    client = MlflowClient(explicit)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    cfg = compose("export", [f"run_id={run.info.run_id}", f"logger.tracking_uri={explicit}"])
    # the run is found (in the explicit store): what stops the export is its missing checkpoint
    with pytest.raises(export.ExportError, match=f"run {run.info.run_id} has no .ckpt artifact"):
        export.export_from_cfg(cfg)


def test_ui_serves_the_resolved_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    assert cli.main(["ui", "dry_run=true", "port=5077"]) == 0  # `iqs ui`, what `make ui` runs
    out = capsys.readouterr().out
    assert f"MLflow store: sqlite:///{tmp_path}/env.db" in out
    cmd = ui.ui_command(compose("ui", ["port=5077"]))
    assert cmd[:4] == [sys.executable, "-m", "mlflow", "ui"]
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path}/env.db"
    assert cmd[cmd.index("--port") + 1] == "5077" and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--default-artifact-root") + 1] == (tmp_path / "mlruns" / "artifacts").as_uri()

    assert ui.main(["dry_run=true", f"logger.tracking_uri=sqlite:///{tmp_path}/mine.db"]) == 0
    assert f"MLflow store: sqlite:///{tmp_path}/mine.db" in capsys.readouterr().out
    # a tracking server has its own UI: nothing is started (one that does not answer: tests/test_first_contact.py)


def test_make_ui_goes_through_iqs_ui() -> None:
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    recipe = makefile.split("\nui:", 1)[1].split("\n\n", 1)[0]
    assert "$(BIN)/iqs ui" in recipe and "sqlite:///" not in recipe
