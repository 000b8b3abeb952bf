"""Training never stops on a bad image: real broken files in a tiny demo are skipped, counted and listed.

Four files of demo_ava are broken the ways a real download breaks them: a truncated JPEG, a zero-byte file,
a text file named .jpg, and a missing file. The checks run the project's one decoder on them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import seed_store
from iqs.core.config import compose, conf_dir
from iqs.core.errors import DataError
from iqs.data.bad_images import BadImagePolicy
from test_train import _isolated_tracking, demo_sources, mlflow_runs, run_train, shrink  # noqa: F401

KINDS = ("truncated", "empty", "not_an_image", "missing")


@pytest.fixture(scope="session")
def clean_demo(tiny_demo) -> Path:
    """The session's tiny demo (conftest): 15 reference photos x 3 images per source, 135 images of 64 px."""
    return tiny_demo


def break_files(demo: Path, dest: Path) -> dict[str, str]:
    """A copy of `demo` with four demo_ava images broken; {kind: path relative to the source root}."""
    shutil.copytree(demo, dest)
    victims = sorted((dest / "ava" / "images").glob("*.jpg"))[:4]
    data = victims[0].read_bytes()
    victims[0].write_bytes(data[: len(data) * 3 // 4])  # truncated in the middle of the scan
    victims[1].write_bytes(b"")
    victims[2].write_text("this is not a photo\n")
    victims[3].unlink()
    return {k: str(p.relative_to(dest / "ava")) for k, p in zip(KINDS, victims, strict=True)}


@pytest.fixture
def broken(clean_demo, tmp_path) -> tuple[Path, dict[str, str]]:
    return tmp_path / "broken", break_files(clean_demo, tmp_path / "broken")


def datamodule(demo: Path, tmp: Path, policy: BadImagePolicy | None, **kw):
    from iqs.core.preprocess import InputSpec
    from iqs.data.mixture import build_mixture
    from iqs.train import build
    from iqs.train.datamodule import QualityDataModule

    cfg = compose("train", shrink(tmp, *demo_sources(demo)))
    mix = build_mixture(cfg.data, cfg.thresholds)
    spec = InputSpec((64, 64), (0.5,) * 3, (0.5,) * 3)
    return QualityDataModule(mix, spec, build.rebalancer(cfg), batch_size=8, bad_images=policy, **kw)


@pytest.mark.slow
def test_defaults_live_in_the_data_group_once():
    cfg = compose("train", [])
    policy = BadImagePolicy.from_cfg(cfg)
    assert (policy.on_bad_image, policy.max_bad_fraction) == ("skip", 0.01)
    for path in sorted((conf_dir() / "data").glob("*.yaml")):  # every mixture, also one added later
        other = compose("train", [f"data={path.stem}"]).data
        assert (other.on_bad_image, other.max_bad_fraction) == ("skip", 0.01)
    with pytest.raises(ValueError, match="on_bad_image must be skip or fail"):
        BadImagePolicy.from_cfg(compose("train", ["data.on_bad_image=ignore"]))
    with pytest.raises(ValueError, match="no max_bad_fraction. Add `- bad_images@_here_: default`"):
        BadImagePolicy.from_cfg(compose("train", ["~data.max_bad_fraction"]))


@pytest.mark.slow
def test_image_rows_skip_broken_files_and_every_batch_loads(broken, tmp_path):
    root, victims = broken
    policy = BadImagePolicy("skip", 0.1, cache_dir=tmp_path / "cache", workers=2)
    dm = datamodule(root, tmp_path, policy)
    skipped = dm.skipped
    assert sorted(skipped["path"]) == sorted(victims.values()) and set(skipped["dataset"]) == {"demo_ava"}
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert {k: reasons[p].split(":")[0] for k, p in victims.items()} == {k: k for k in KINDS}
    assert dm.n_missing == 1
    assert not set(dm.table["path"][dm.table["dataset"] == "demo_ava"]) & set(victims.values())
    # the end-to-end image path reads every remaining row of every split, none of them broken
    dm.setup("fit")
    seen = []
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for batch in loader:
            assert batch["image"].shape[1:] == (3, 64, 64) and np.isfinite(batch["image"].numpy()).all()
            seen.extend(batch["row"].tolist())
    assert sorted(seen) == list(range(len(dm.table)))


@pytest.mark.slow
def test_fail_mode_and_max_fraction_name_the_files(broken, tmp_path):
    root, victims = broken
    with pytest.raises(DataError, match="data.on_bad_image=fail") as err:
        datamodule(root, tmp_path, BadImagePolicy("fail", 1.0, cache_dir=tmp_path / "cache"))
    assert all(p in str(err.value) for p in victims.values())
    # 4 of demo_ava's 45 images: 8.9%, over a 5% limit, within a 10% one
    with pytest.raises(DataError, match=r"demo_ava: 4 of 45 images are unreadable \(8.9%") as err:
        datamodule(root, tmp_path, BadImagePolicy("skip", 0.05, cache_dir=tmp_path / "cache"))
    assert all(p in str(err.value) for p in victims.values())
    assert len(datamodule(root, tmp_path, BadImagePolicy("skip", 0.1)).skipped) == 4


@pytest.mark.slow
def test_prepared_shards_give_the_verdict_without_decoding_again(broken, tmp_path, monkeypatch):
    from iqs.data import bad_images
    from iqs.data.prepare import PreparedImages, prepare_source

    root, victims = broken
    rel = sorted(str(p.relative_to(root / "ava")) for p in (root / "ava" / "images").glob("*.jpg"))
    rel += [victims["missing"]]
    rep = prepare_source(
        "demo_ava", root / "ava", rel, tmp_path / "cache", short_side=64, workers=1, progress=False
    )
    shards = PreparedImages(rep.out_dir)
    assert sorted(shards.errors) == sorted(victims.values())
    decoded: list[str] = []
    real = bad_images.decode_all
    monkeypatch.setattr(
        bad_images, "decode_all", lambda files, **kw: decoded.extend(files) or real(files, **kw)
    )
    dm = datamodule(root, tmp_path, BadImagePolicy("skip", 0.1), prepared={"demo_ava": shards})
    assert sorted(dm.skipped["path"]) == sorted(victims.values())
    assert decoded and not [f for f in decoded if "/ava/" in f]  # demo_ava came from its shards alone


def test_check_results_are_kept_per_file_and_changed_files_are_decoded_again(broken, tmp_path, monkeypatch):
    from iqs.data import bad_images

    root, victims = broken
    src = root / "ava"
    rel = sorted(str(p.relative_to(src)) for p in (src / "images").glob("*.jpg")) + [victims["missing"]]
    first = bad_images.check_source("demo_ava", src, rel, cache_dir=tmp_path, workers=1, progress=False)
    assert sorted(first) == sorted(victims.values())
    decoded: list[str] = []
    real = bad_images.decode_all
    monkeypatch.setattr(
        bad_images, "decode_all", lambda files, **kw: decoded.extend(files) or real(files, **kw)
    )
    assert bad_images.check_source("demo_ava", src, rel, cache_dir=tmp_path, progress=False) == first
    assert decoded == []  # unchanged files: nothing decoded
    fixed = src / victims["empty"]
    shutil.copyfile(src / rel[10], fixed)  # repaired: a good photo now
    again = bad_images.check_source("demo_ava", src, rel, cache_dir=tmp_path, progress=False)
    assert decoded == [str(fixed)] and sorted(again) == sorted(set(victims.values()) - {victims["empty"]})


@pytest.mark.slow
def test_training_skips_broken_images_counts_and_lists_them(broken, tmp_path, migrated_db):
    root, victims = broken
    seed_store(tmp_path, migrated_db)
    ov = shrink(tmp_path, *demo_sources(root), "experiment=demo", "data.max_bad_fraction=0.1", epochs=1)
    metrics, objs = run_train(ov)
    run = mlflow_runs(tmp_path).set_index("run_id").loc[objs["run_id"]]
    assert run["status"] == "FINISHED"
    assert run["metrics.data/demo_ava/skipped"] == 4
    assert run["metrics.data/demo_koniq/skipped"] == 0 and run["metrics.data/demo_spaq/skipped"] == 0
    import mlflow

    listed = pd.read_csv(
        mlflow.artifacts.download_artifacts(f"{run['artifact_uri']}/data/skipped_images.csv")
    )
    assert sorted(listed["path"]) == sorted(victims.values())
    # skipped rows drop out of the scores: the predictions cover the remaining test rows, and none is broken
    dm = objs["datamodule"]
    pred = objs["predictions"]
    assert len(pred) == int((dm.table["split"] == "test").sum())
    assert not set(victims.values()) & set(pred.loc[pred["dataset"] == "demo_ava", "path"])
    assert np.isfinite(metrics["test/demo_ava/srcc"]) and np.isfinite(pred["pred_score"]).all()
    # fail mode: the run stops before training, FAILED, with the files named
    with pytest.raises(DataError, match="unreadable image"):
        run_train([*ov, "data.on_bad_image=fail"])
    failed = mlflow_runs(tmp_path).sort_values("start_time").iloc[-1]
    assert failed["status"] == "FAILED" and victims["truncated"] in failed["tags.error"]
