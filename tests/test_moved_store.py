"""A copied `mlruns/` still names the original checkout's artifact folder: detected, explained and fixable."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from iqs.core.config import compose
from iqs.tracking import tracked_run
from iqs.tracking.store import main as store_main
from iqs.tracking.store import moved_store_warning


def run_in(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A run with the real logger/paths configs from `checkout` (its ./mlruns store); its artifact URI."""
    monkeypatch.chdir(checkout)
    with tracked_run(compose("compare")) as run:
        run.log_text("hello", "note.txt")
    return run.artifact_uri


@pytest.mark.slow
def test_copied_store_is_reported_and_relocated(tmp_path, migrated_db, monkeypatch, caplog, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    original, copy = tmp_path / "original", tmp_path / "copy"
    (original / "mlruns").mkdir(parents=True)
    shutil.copy(migrated_db, original / "mlruns" / "mlflow.db")
    caplog.set_level(logging.WARNING)
    first = run_in(original, monkeypatch)
    assert first.startswith((original / "mlruns" / "artifacts").as_uri())
    assert not [
        r for r in caplog.records if "outside this store" in r.getMessage()
    ]  # a store in place is fine

    shutil.copytree(original / "mlruns", copy / "mlruns")
    second = run_in(copy, monkeypatch)
    # what the issue found: the copy's run writes into the original checkout ...
    assert second.startswith((original / "mlruns" / "artifacts").as_uri())
    # ... now with one warning that names both folders and the fix
    warned = [r.getMessage() for r in caplog.records if "outside this store" in r.getMessage()]
    assert len(warned) == 1, warned
    db = copy / "mlruns" / "mlflow.db"
    assert (
        str(original / "mlruns" / "artifacts" / "iqs-digikam") in warned[0]
        and str(copy / "mlruns") in warned[0]
    )
    assert f"iqs store relocate {db}" in warned[0]

    # the fix: point the copy's experiments and runs at its own files, then lose the original
    assert store_main([str(db)]) == 0
    assert (
        f"iqs-digikam: {(original / 'mlruns/artifacts/iqs-digikam').as_uri()} ->" in capsys.readouterr().out
    )
    shutil.rmtree(original)
    caplog.clear()
    third = run_in(copy, monkeypatch)
    assert third.startswith((copy / "mlruns" / "artifacts" / "iqs-digikam").as_uri())
    assert not [r for r in caplog.records if "outside this store" in r.getMessage()]
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("iqs-digikam").experiment_id])
    assert len(runs) == 3
    second_id = second.split("/")[-2]  # <location>/<run id>/artifacts
    for run in runs:  # every run points into the copy; the files copied with mlruns/ are read from there
        assert run.info.artifact_uri.startswith((copy / "mlruns").as_uri())
        if run.info.run_id != second_id:
            note = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path))
            assert Path(note).read_text() == "hello"
    # the run made before the fix wrote its files into the original folder: they went with it
    assert not list((copy / "mlruns" / "artifacts").rglob(second_id))
    assert store_main([str(db)]) == 0  # nothing left to do
    assert "already keeps its files inside the store" in capsys.readouterr().out


def test_only_local_stores_outside_their_folder_are_reported(tmp_path):
    db = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    inside = (tmp_path / "mlruns" / "artifacts" / "e").as_uri()
    assert moved_store_warning(db, "e", inside, inside) is None
    # a configured artifact root elsewhere (logger.artifact_location=/big/disk) is not a moved store
    big = (tmp_path / "disk" / "e").as_uri()
    assert moved_store_warning(db, "e", big, big) is None
    assert "outside this store's folder" in moved_store_warning(
        db, "e", (tmp_path / "old" / "e").as_uri(), inside
    )
    # plain paths count as local; remote stores and remote artifact roots are never checked
    assert moved_store_warning(db, "e", str(tmp_path / "old" / "e"), inside) is not None
    assert moved_store_warning(db, "e", "s3://bucket/e", inside) is None
    assert moved_store_warning("http://127.0.0.1:5000", "e", (tmp_path / "old").as_uri(), None) is None


def test_the_suggested_command_points_the_experiment_at_the_configured_root(tmp_path, migrated_db):
    """With logger.artifact_location elsewhere (a big disk), the fix the warning names moves it there."""
    import shlex

    db = tmp_path / "copy" / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True)
    shutil.copy(migrated_db, db)
    uri = f"sqlite:///{db}"
    old = (tmp_path / "original" / "disk" / "e").as_uri()
    MlflowClient(uri).create_experiment("e", artifact_location=old)
    disk = tmp_path / "big disk"  # a space: the command must still paste as one argument
    for root in (disk, db.parent / "artifacts"):  # configured root; the default one
        message = moved_store_warning(uri, "e", old, (root / "e").as_uri())
        assert f"points the experiments at {root}/<experiment>" in message
        command = shlex.split(message.split("`")[1])
        assert command[:3] == ["iqs", "store", "relocate"]
        assert ("--artifact-root" in command) == (root == disk)
    command = shlex.split(moved_store_warning(uri, "e", old, (disk / "e").as_uri()).split("`")[1])
    assert store_main(command[3:]) == 0
    location = MlflowClient(uri).get_experiment_by_name("e").artifact_location
    assert location == (disk / "e").as_uri()


@pytest.mark.slow
def test_iqs_train_reports_a_copied_store_once(tmp_path, migrated_db, monkeypatch, caplog):
    """`iqs train` looks up its experiment before the run (resume, liveness) and when it opens it: one warning."""
    from iqs.train.resume import prepare

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    original, copy = tmp_path / "original", tmp_path / "copy"
    (original / "mlruns").mkdir(parents=True)
    shutil.copy(migrated_db, original / "mlruns" / "mlflow.db")
    run_in(original, monkeypatch)
    shutil.copytree(original / "mlruns", copy / "mlruns")
    monkeypatch.chdir(copy)
    caplog.set_level(logging.WARNING)
    cfg = compose("train")
    assert prepare(cfg) is None  # what iqs.train.run does before the run opens
    with tracked_run(cfg):
        pass
    warned = [r for r in caplog.records if "outside this store" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]
