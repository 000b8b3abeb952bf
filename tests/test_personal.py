"""`iqs train experiment=personal init_from=<run>`: the model comes from the init run, three compared runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import seed_store
from iqs.core.config import compose
from iqs.models.checkpoints import read_checkpoint
from iqs.train import build
from iqs.train.init_from import InitFromError, fill_model_groups, model_groups

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "IQS_SWEEP_ID", "IQS_CACHE_DIR", "IQS_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def general_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint as `iqs train` writes it (Lightning's `model.` prefix, iqs_meta), with baked cuts."""
    from iqs.models import build_quality_model

    torch.manual_seed(0)
    cfg = {
        "backbone": {"name": "test_efficientnet", "weights": "none", "input_size": 64},
        "head": {"name": "regression", "hidden": [8]},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    model = build_quality_model(cfg)
    meta = {**model.meta, "decision_cuts": [4.5, 6.5]}
    path = tmp_path_factory.mktemp("general") / "best.ckpt"
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "iqs_meta": meta}, path
    )
    return path


def personal_cfg(ckpt: Path, *extra: str):
    return compose("train", ["experiment=personal", "dataset.root=/nowhere", f"init_from={ckpt}", *extra])


def test_model_groups_come_from_the_init_run(general_ckpt: Path) -> None:
    _, meta = read_checkpoint(general_ckpt)
    cfg = personal_cfg(general_ckpt)
    assert cfg.get("backbone") is None and cfg.get("head") is None  # the preset leaves them to the init run
    fill_model_groups(cfg, meta, str(general_ckpt))
    assert cfg.backbone.name == "test_efficientnet" and list(cfg.backbone.input_size) == [64, 64]
    assert cfg.head.name == "regression" and list(cfg.head.hidden) == [8]
    assert (cfg.thresholds.t1, cfg.thresholds.t2, cfg.thresholds.name) == (5.0, 6.0, "5_6")
    # the filled groups instantiate like conf/backbone and conf/head, to the init run's model
    rebuilt = build.instantiate_node(cfg.backbone)
    assert (rebuilt.name, rebuilt.weights, rebuilt.input_size) == ("test_efficientnet", "none", [64, 64])
    head = build.instantiate_node(cfg.head)(in_features=meta["num_features"], t1=5.0, t2=6.0)
    assert head.cfg == meta["head_cfg"]
    # restating what the run has is fine
    fill_model_groups(personal_cfg(general_ckpt, "+backbone.input_size=64", "+head.hidden=[8]"), meta, "x")


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("backbone=resnet50", "backbone.name=resnet50"),
        ("head=classification", "head.name=classification"),
        ("+head.hidden=[16]", "head.hidden=[16]"),
        ("+backbone.pool=mlsp", "backbone.pool=mlsp"),
        ("+backbone.freeze=false", "backbone.freeze=false"),
        ("thresholds=t4_7", "thresholds.t1=4"),
    ],
)
def test_a_config_asking_for_another_model_is_refused(general_ckpt: Path, override: str, named: str) -> None:
    _, meta = read_checkpoint(general_ckpt)
    with pytest.raises(InitFromError, match="asks for another model") as err:
        fill_model_groups(personal_cfg(general_ckpt, override), meta, "run123")
    assert named in str(err.value) and "init_from=run123" in str(err.value)


def test_roles_start_from_the_right_weights(general_ckpt: Path) -> None:
    state, meta = read_checkpoint(general_ckpt)
    cfg = personal_cfg(general_ckpt, f"personal.checkpoint={general_ckpt}")
    models = {}
    for role in ("general", "personal", "scratch"):
        cfg.personal.role = role
        models[role] = build.model(cfg, None)  # as the run builds it
        assert models[role].backbone.frozen
        for k, v in models[role].state_dict().items():
            if k.startswith("backbone."):
                assert torch.equal(v, state[k]), (role, k)
    head = {k: v for k, v in state.items() if k.startswith("head.")}
    assert all(torch.equal(models["personal"].state_dict()[k], v) for k, v in head.items())
    assert not all(torch.equal(models["scratch"].state_dict()[k], v) for k, v in head.items())
    # the general model keeps the cuts baked into it (its classes as exported); trained heads are cut afresh
    assert models["general"].decision_cuts == (4.5, 6.5)
    assert models["personal"].decision_cuts is None and models["scratch"].decision_cuts is None
    assert meta["decision_cuts"] == [4.5, 6.5]


def test_init_from_names_what_is_missing(tmp_path: Path) -> None:
    from iqs.train.init_from import resolve_checkpoint
    from iqs.train.personal import train_shares
    from iqs.train.user_errors import USER_ERRORS

    with pytest.raises(InitFromError, match="checkpoint not found") as err:
        resolve_checkpoint(str(tmp_path / "gone.ckpt"), None, tmp_path)
    # a user's error: `iqs train` prints one line and a sweep's other jobs go on
    assert isinstance(err.value, USER_ERRORS)
    with pytest.raises(USER_ERRORS, match="no labelled training photos"):
        train_shares(pd.DataFrame({"split": ["val", "test"], "label": [0, 2]}))


def test_a_pair_that_cannot_tell_the_classes_apart_is_refused(general_ckpt: Path) -> None:
    from iqs.train.personal import label_source

    cfg = personal_cfg(general_ckpt)
    label_source(cfg, (5.0, 6.0))
    assert cfg.data.sources.personal.thresholds is None  # the model's own pair labels the library
    assert cfg.data.sources.personal.adapter == "digikam_xmp"
    with pytest.raises(InitFromError, match="t1 < 5.5 <= t2"):
        label_source(personal_cfg(general_ckpt), (5.5, 6.5))
    assert (
        model_groups({**read_checkpoint(general_ckpt)[1], "thresholds": [4, 7]})["thresholds"]["name"]
        == "4_7"
    )


def test_each_job_of_one_sweep_gets_its_own_personal_id() -> None:
    """`iqs train -m experiment=personal dataset.root=A,B`: both jobs share the launcher's sweep id, but each
    compares only its own three runs (compare_roles filters on the personal id)."""
    from omegaconf import OmegaConf

    from iqs.train.personal import personal_id_for

    cfg = OmegaConf.create({"logger": {"sweep_id": "2026-12-02_04-00-00_abcd1234"}})
    first, second = personal_id_for(cfg), personal_id_for(cfg)
    assert first != second
    assert first.startswith("2026-12-02_04-00-00_abcd1234-") and second.startswith(
        "2026-12-02_04-00-00_abcd1234-"
    )
    alone = personal_id_for(OmegaConf.create({}))
    assert alone.startswith("personal-") and alone != personal_id_for(OmegaConf.create({}))


@pytest.mark.slow
def test_personal_end_to_end_on_a_generated_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_db: Path
) -> None:
    """A tiny general run on the demo, then experiment=personal on a generated digiKam library."""
    import mlflow

    from iqs.data.demo.build import DemoSpec, ensure_demo
    from iqs.data.demo.library import LibrarySpec, build_library
    from iqs.train.init_from import resolve_checkpoint
    from iqs.train.run import train

    seed_store(tmp_path, migrated_db)
    demo = ensure_demo(tmp_path / "demo", 0, spec=DemoSpec(1, 64, 1, 2), progress=False)
    library = tmp_path / "library"
    manifest = build_library(library, 0, LibrarySpec(crops_per_photo=1, long_side=64))
    fast = [
        f"paths.root_dir={tmp_path}",
        "trainer=cpu_fast",
        "loader.batch_size=16",
        "cache.batch_size=64",
        "logger.test_ci.n_resamples=200",
        "logger.plots=false",
    ]
    _, general = train(
        compose(
            "train",
            [
                "experiment=demo",
                f"output_dir={tmp_path}/general",
                "backbone.input_size=64",
                "trainer.max_epochs=1",
                "data.demo_dir=null",
                "~data.sources.demo_ava",  # one source keeps the general run small
                "~data.sources.demo_koniq",
                f"data.sources.demo_spaq.root={demo}/spaq",
                *fast,
                "loader.batch_size=24",  # its 33 training photos: no batch of one for the batch-norm head
            ],
        )
    )
    import iqs.data.mixture

    built = []
    build_mixture = iqs.data.mixture.build_mixture
    monkeypatch.setattr(
        iqs.data.mixture, "build_mixture", lambda *a, **k: built.append(1) or build_mixture(*a, **k)
    )
    _, objects = train(
        compose(
            "train",
            [
                "experiment=personal",
                f"dataset.root={library}",
                f"init_from={general['run_id']}",
                f"output_dir={tmp_path}/personal",
                "trainer.max_epochs=3",
                "personal.compare_metrics=[macro_f1]",
                "trainer.limit_train_batches=1.0",
                "trainer.limit_val_batches=1.0",
                "trainer.limit_test_batches=1.0",
                *fast,
            ],
        )
    )
    assert len(built) == 1  # the library's sidecars are read once for the three runs
    with pytest.raises(InitFromError, match="no usable MLflow run"):  # a run id the store does not have
        resolve_checkpoint("0123456789abcdef", compose("train", fast[:1]), tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.personal_id = '{objects['personal_id']}'"
    )
    assert sorted(runs["tags.personal_role"]) == ["general", "personal", "scratch"]
    assert set(runs["tags.sweep_id"]) == {objects["personal_id"]}
    assert set(runs["status"]) == {"FINISHED"}
    # the model came from the general run: backbone (input 64) and head; its features are cached once
    assert set(runs["params.backbone.input_size"]) == {"[64, 64]"} and set(runs["params.head.name"]) == {
        "regression"
    }
    cache = dict(zip(runs["tags.personal_role"], runs["tags.feature_cache"], strict=True))
    assert cache["personal"] == "hit" and cache["scratch"] == "hit"
    # every run: labelled library photos only, the same held-out photos, test metrics with CIs
    client = mlflow.MlflowClient()
    tests = {}
    for _, run in runs.iterrows():
        lo, hi = run["metrics.test/all/macro_f1_lo"], run["metrics.test/all/macro_f1_hi"]
        assert 0 <= lo <= hi <= 1  # cluster-bootstrap CI over the held-out bursts
        assert "metrics.test/all/srcc_lo" in runs.columns
        preds = pd.read_csv(
            client.download_artifacts(
                run["run_id"], "predictions/test_predictions.csv", str(tmp_path / run["run_id"])
            )
        )
        tests[run["tags.personal_role"]] = preds
    assert (
        tests["general"]["path"].tolist()
        == tests["personal"]["path"].tolist()
        == tests["scratch"]["path"].tolist()
    )
    truth = {f["path"]: f["cls"] for f in manifest["frames"] if f["cls"] is not None}
    assert all(
        truth[p] == c for p, c in zip(tests["personal"]["path"], tests["personal"]["label"], strict=True)
    )
    # the comparison: paired deltas against the general model, logged into each run
    report = Path(objects["comparison"]).read_text(encoding="utf-8")
    assert "runs vs baseline personal-general" in report and "delta [CI]" in report
    for _, run in runs.iterrows():
        files = {Path(a.path).name for a in client.list_artifacts(run["run_id"], "compare")}
        assert {"personal_vs_general.md", "macro_f1_vs_general.png"} <= files
    # the personal checkpoint carries cuts fitted to the user's class shares
    ckpt = next((tmp_path / "personal" / "personal" / "checkpoints").glob("*.ckpt"))
    assert len(read_checkpoint(ckpt)[1]["decision_cuts"]) == 2
    json.dumps(objects["runs"])  # plain ids
