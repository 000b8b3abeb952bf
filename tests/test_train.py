"""`iqs train` end to end on a tiny demo build: real configs, shrunk (tmp_path, 64 px, a few epochs)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

import conftest
from conftest import seed_store
from iqs.core.config import compose

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

tiny_demo = conftest.tiny_demo  # the session's demo build, for the modules that import it from here

PRESETS = ("demo", "seed_ava_3class", "seed_combined", "nima_ava")


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("IQS_SWEEP_ID", raising=False)
    monkeypatch.delenv("IQS_CACHE_DIR", raising=False)
    monkeypatch.delenv("IQS_DATA_DIR", raising=False)


def tiny_run(epochs: int = 3) -> list[str]:
    """Overrides that make any train config tiny: 64 px, CPU, a few short epochs, the whole test split, and no
    figures (they take most of a tiny run's time; a test that checks them adds `logger.plots=true`)."""
    return [
        "backbone.input_size=64",
        "trainer=cpu_fast",
        f"trainer.max_epochs={epochs}",
        "trainer.limit_test_batches=1.0",
        "loader.batch_size=16",
        "loader.eval_batch_size=64",
        "cache.batch_size=64",
        "logger.plots=false",
    ]


def shrink(tmp: Path, *extra: str, epochs: int = 3) -> list[str]:
    """`tiny_run` with everything under tmp."""
    return [f"paths.root_dir={tmp}", f"output_dir={tmp}/out", *tiny_run(epochs), *extra]


def demo_sources(demo: Path) -> list[str]:
    return [
        "data.demo_dir=null",
        f"data.sources.demo_ava.root={demo}/ava",
        f"data.sources.demo_koniq.root={demo}/koniq",
        f"data.sources.demo_spaq.root={demo}/spaq",
    ]


def run_train(overrides: list[str]):
    from iqs.train.run import train

    return train(compose("train", overrides))


def mlflow_runs(tmp: Path) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlruns/mlflow.db")
    return mlflow.search_runs(search_all_experiments=True)


def mlflow_artifacts(tmp: Path, run_id: str, path: str | None = None) -> list:
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db").list_artifacts(run_id, path)


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_presets_compose_with_one_monitor_and_one_threshold_pair(preset):
    cfg = compose("train", [f"experiment={preset}"])
    assert cfg.monitor.metric == "val/all/srcc" and cfg.monitor.mode == "max"
    assert cfg.thresholds.t1 < cfg.thresholds.t2
    assert cfg.optimizer._partial_ and cfg.scheduler._partial_
    assert cfg.scheduler.T_max == cfg.trainer.max_epochs
    expected = {"demo": ("demo", None), "seed_ava_3class": ("ava", "classification")}
    expected |= {"seed_combined": ("seed_combined", "classification"), "nima_ava": ("ava", "distribution")}
    data, head = expected[preset]
    assert cfg.data.name == data
    if head:
        assert cfg.head.name == head
    assert cfg.backbone.freeze is (preset != "nima_ava")


def test_sweep_axes_are_not_pinned_by_the_demo_preset():
    cfg = compose(
        "train", ["experiment=demo", "head=classification", "rebalance=sampler", "thresholds=t4.5_6.5"]
    )
    assert (cfg.head.name, cfg.rebalance.name, cfg.thresholds.name) == (
        "classification",
        "sampler",
        "4.5_6.5",
    )


@pytest.mark.slow
def test_train_end_to_end_and_cache_hit_reproduces_miss(tiny_demo, tmp_path, migrated_db):
    from iqs.core.decode import load_rgb
    from iqs.core.preprocess import InputSpec, eval_transform
    from iqs.models.checkpoints import load_checkpoint

    seed_store(tmp_path, migrated_db)
    ov = shrink(tmp_path, *demo_sources(tiny_demo), "experiment=demo")
    metrics, objs = run_train([*ov, "logger.plots=true"])
    dm = objs["datamodule"]
    assert objs["feature_cache"] == "miss"
    for ds in [*dm.dataset_names, "all"]:
        for m in ("plcc", "srcc", "acc", "macro_f1", "rmse"):
            assert f"test/{ds}/{m}" in metrics
    # the predictions cover exactly the test rows and agree with the logged metrics (scipy)
    pred = objs["predictions"]
    test_rows = dm.table[dm.table["split"] == "test"]
    assert sorted(pred["image_id"]) == sorted(test_rows["image_id"])
    assert metrics["test/all/srcc"] == pytest.approx(
        spearmanr(pred["pred_score"], pred["score"])[0], abs=1e-6
    )
    assert (objs["output_dir"] / "test_predictions.csv").is_file()

    # the best checkpoint carries iqs_meta, loads with weights_only and reproduces a test prediction from pixels
    ckpt = objs["best_checkpoint"]
    assert ckpt and Path(ckpt).is_relative_to(objs["output_dir"])
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["iqs_meta"]
    assert (
        meta["head"] == "regression" and meta["input_size"] == [64, 64] and meta["thresholds"] == [5.0, 6.0]
    )
    assert meta["freeze"] is True  # the demo preset's frozen backbone (the other presets: below)
    model, _ = load_checkpoint(ckpt)
    row = pred.iloc[0]
    path = dm.paths[
        dm.table.index[(dm.table["dataset"] == row["dataset"]) & (dm.table["image_id"] == row["image_id"])][0]
    ]
    x = eval_transform(InputSpec.from_meta(meta))(image=load_rgb(path))["image"][None]
    with torch.inference_mode():
        score = float(model(x)["score"][0])
    # the cache stores float16 embeddings: the head sees them rounded
    assert score == pytest.approx(row["pred_score"], abs=0.02)

    runs = mlflow_runs(tmp_path)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    assert runs.iloc[0]["tags.feature_cache"] == "miss"
    plots = {a.path for a in mlflow_artifacts(tmp_path, objs["run_id"], "plots")}
    sources = sorted(dm.dataset_names)
    assert plots == {
        *(f"plots/{kind}_{ds}.png" for kind in ("confusion", "scatter") for ds in [*sources, "all"]),
        *(f"plots/label_hist_train_{s}.png" for s in sources),
    }

    # same config again, without figures (logger.plots=false): the embeddings come from the cache and the run
    # is identical
    metrics2, objs2 = run_train([*ov[:1], f"output_dir={tmp_path}/out2", *ov[2:]])
    assert objs2["feature_cache"] == "hit"
    pd.testing.assert_frame_equal(objs2["predictions"], pred)
    assert metrics2["test/all/srcc"] == metrics["test/all/srcc"]
    runs = mlflow_runs(tmp_path)
    assert sorted(runs["tags.feature_cache"]) == ["hit", "miss"]
    assert mlflow_artifacts(tmp_path, objs2["run_id"], "plots") == []
    assert {"model_card.md", "predictions"} <= {a.path for a in mlflow_artifacts(tmp_path, objs2["run_id"])}


@pytest.mark.slow
def test_missing_images_are_dropped_with_a_count(tiny_demo, tmp_path):
    from iqs.core.preprocess import InputSpec
    from iqs.data.mixture import build_mixture
    from iqs.train import build
    from iqs.train.datamodule import QualityDataModule

    cfg = compose("train", shrink(tmp_path, *demo_sources(tiny_demo), "experiment=demo"))
    mix = build_mixture(cfg.data, cfg.thresholds)
    gone = mix.table[mix.table["split"] == "train"].iloc[:3]
    paths = mix.abs_paths(gone)
    originals = {p: Path(p).read_bytes() for p in paths}
    try:
        for p in paths:
            Path(p).unlink()
        spec = InputSpec((64, 64), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        dm = QualityDataModule(mix, spec, build.rebalancer(cfg), batch_size=8)
    finally:
        for p, data in originals.items():
            Path(p).write_bytes(data)
    assert dm.n_missing == 3 and len(dm.table) == len(mix.table) - 3
    assert not set(gone["image_id"]) & set(
        dm.table[dm.table["dataset"] == gone["dataset"].iloc[0]]["image_id"]
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 64, 64)
    assert set(batch) == {"image", "score", "dist", "label", "dataset_idx", "weight", "row"}
    # the batch's targets are the table's rows
    rows = dm.table.iloc[batch["row"].numpy()]
    np.testing.assert_allclose(batch["score"].numpy(), rows["score"].to_numpy(np.float32))
    np.testing.assert_array_equal(batch["label"].numpy(), rows["label"].to_numpy())


@pytest.mark.slow
def test_rebalancer_weights_and_balanced_mse_reach_the_model(tiny_demo, tmp_path):
    from iqs.core.preprocess import InputSpec
    from iqs.data.mixture import build_mixture
    from iqs.losses import BalancedMSELoss
    from iqs.train import build
    from iqs.train.datamodule import QualityDataModule

    cfg = compose(
        "train", shrink(tmp_path, *demo_sources(tiny_demo), "experiment=demo", "rebalance=loss_weight")
    )
    rb = build.rebalancer(cfg)
    mix = build_mixture(cfg.data, cfg.thresholds)
    dm = QualityDataModule(mix, InputSpec((64, 64), (0.5,) * 3, (0.5,) * 3), rb, batch_size=8)
    dm.setup("fit")
    ds = dm._datasets["train"]
    expected = rb.sample_weights(ds.score, ds.label)
    torch.testing.assert_close(ds.weight, expected.float())
    assert float(ds.weight.std()) > 0  # the demo's scores are imbalanced: weights differ

    cfg = compose(
        "train", shrink(tmp_path, *demo_sources(tiny_demo), "experiment=demo", "rebalance=balanced_mse")
    )
    rb = build.rebalancer(cfg)
    head = build.head(cfg, rb)(in_features=8, t1=5.0, t2=6.0)  # the head iqs.train.build gives the model
    assert isinstance(head.loss_fn, BalancedMSELoss)
    assert head.options.bmc_init_sigma == rb.loss_params["init_noise_sigma"]


@pytest.mark.slow
# the demo preset trains end to end in test_train_end_to_end_and_cache_hit_reproduces_miss
@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "demo"])
def test_experiment_preset_runs_on_stand_in_data(preset, tiny_demo, tmp_path, migrated_db):
    """Each preset with its dataset roots pointed at demo-built files in the official formats."""
    d = tiny_demo
    seed_store(tmp_path, migrated_db)
    # the stand-ins have no official test list / split file: the mixture splits them by reference photo
    ava = [
        f"data.sources.ava.root={d}/ava",
        "data.sources.ava.test_list=null",
        "data.sources.ava.group_file=groups.csv",
    ]
    roots = {
        "seed_ava_3class": ava,
        "nima_ava": [*ava, "loader.num_workers=0", "trainer.limit_train_batches=2"],
        "seed_combined": [
            *ava,
            # no EVA-format stand-in is generated: the preset runs with its three other sources
            "~data.sources.eva",
            f"data.sources.koniq10k.root={d}/koniq",
            "data.sources.koniq10k.split_file=null",
            "data.sources.koniq10k.split_column=null",
            "data.sources.koniq10k.group_file=groups.csv",
            f"data.sources.spaq.root={d}/spaq",
            "data.sources.spaq.group_file=groups.csv",
            # KonIQ and SPAQ keep only their bad images; the tiny stand-ins have few, so keep them all here
            "data.sources.koniq10k.keep_classes=null",
            "data.sources.spaq.keep_classes=null",
        ],
    }[preset]
    metrics, objs = run_train(shrink(tmp_path, f"experiment={preset}", *roots, epochs=2))
    assert np.isfinite(metrics["test/all/acc"])
    assert objs["feature_cache"] == ("off" if preset == "nima_ava" else "miss")
    meta = torch.load(objs["best_checkpoint"], map_location="cpu", weights_only=True)["iqs_meta"]
    assert meta["head"] == objs["cfg"].head.name
    assert meta["freeze"] is (preset != "nima_ava")


@pytest.mark.slow
def test_sweep_jobs_get_distinct_output_dirs_and_one_sweep_id(tiny_demo, tmp_path, migrated_db):
    from iqs.train.run import main

    seed_store(tmp_path, migrated_db)

    ov = [
        o
        for o in shrink(tmp_path, *demo_sources(tiny_demo), "experiment=demo", epochs=1)
        if "output_dir" not in o
    ]
    rc = main(["-m", *ov, "head=regression,classification", "hydra/job_logging=disabled"])
    assert rc == 0
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    assert runs["tags.sweep_id"].nunique() == 1 and runs["tags.sweep_id"].iloc[0] != "none"
    out_dirs = [Path(p) for p in runs["tags.output_dir"]]
    assert len(set(out_dirs)) == 2
    sweep_root = tmp_path / "multirun"
    for out in out_dirs:
        assert out.is_relative_to(sweep_root.resolve())
        assert (out / "test_predictions.csv").is_file() and (out / ".hydra" / "config.yaml").is_file()
        assert list((out / "checkpoints").glob("*.ckpt"))
    # nothing was written outside the jobs' folders but the shared stores
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mlruns", "multirun"]


@pytest.mark.slow
def test_a_bad_dataset_root_fails_a_recorded_run(tiny_demo, tmp_path, migrated_db):
    seed_store(tmp_path, migrated_db)
    sources = [o.replace(f"{tiny_demo}/spaq", f"{tmp_path}/nowhere") for o in demo_sources(tiny_demo)]
    with pytest.raises(Exception, match="nowhere"):
        run_train(shrink(tmp_path, *sources, "experiment=demo"))
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FAILED"
    assert "nowhere" in runs.iloc[0]["tags.error"]
