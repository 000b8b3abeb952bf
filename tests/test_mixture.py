from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

import iqs.data.adapters as adapters
from iqs.core.scale import to_common
from iqs.data.adapters.base import SourceData
from iqs.data.mixture import ConfigError, build_mixture, single_source_mixture
from iqs.data.table import make_table

THRESHOLDS = {"name": "5_6", "t1": 5.0, "t2": 6.0}


def synthetic(name, ids, split=None, group_prefix=None, lo=1.0, hi=10.0, seed=0) -> pd.DataFrame:
    ids = [str(i) for i in ids]
    raw = np.random.default_rng(seed).uniform(lo, hi, len(ids))
    groups = [f"{group_prefix}:{i}" for i in ids] if group_prefix else None
    return make_table(
        name,
        ids,
        [f"images/{i}.jpg" for i in ids],
        raw,
        to_common(raw, lo, hi),
        np.full((len(ids), 10), 0.1),
        split=split,
        group=groups,
    )


@pytest.fixture
def fake_sources(monkeypatch, tmp_path):
    """Register synthetic tables by source name and answer load_source from them."""
    tables: dict[str, pd.DataFrame] = {}
    seen: list[dict] = []

    def load_source(cfg):
        seen.append(OmegaConf.to_container(cfg) if not isinstance(cfg, dict) else dict(cfg))
        t = tables[cfg["name"]]
        return SourceData(cfg["name"], tmp_path / cfg["name"], t.copy(), ["images/gone.jpg"])

    monkeypatch.setattr(adapters, "load_source", load_source, raising=False)
    return tables, seen


def source(**extra) -> dict:
    return {"adapter": "fake", "root": "/nowhere", "annotations": "x.csv", **extra}


def ava_eva_tables(tables):
    rng = np.random.default_rng(0)
    ava_ids = np.arange(3000)
    ava_split = np.where(rng.random(3000) < 0.1, "test", "trainval").astype(object)
    tables["ava"] = synthetic("ava", ava_ids, ava_split, "ava")
    eva_ids = np.arange(2500, 3500)  # 500 ids shared with AVA
    tables["eva"] = synthetic("eva", eva_ids, None, "ava", lo=0.0, hi=10.0, seed=1)
    # an official split that disagrees with AVA's on shared images: the dedup case
    k_ids = np.arange(2900, 3000)
    tables["other"] = synthetic("other", k_ids, np.array(["train", "val"] * 50, dtype=object), "ava", seed=2)
    return ava_split


def test_ava_eva_mixture_has_no_leak_and_reports_removed(fake_sources) -> None:
    tables, _ = fake_sources
    ava_split = ava_eva_tables(tables)
    data = {
        "name": "ava_eva",
        "seed": 0,
        "val_fraction": 0.1,
        "test_fraction": 0.1,
        "sources": {"ava": source(), "eva": source(), "other": source()},
    }
    mix = build_mixture(data, THRESHOLDS)

    t = mix.table
    assert set(t["split"]) <= {"train", "val", "test"}
    per = {s: set(t.loc[t["split"] == s, "group"]) for s in ("train", "val", "test")}
    assert not per["test"] & (per["train"] | per["val"])
    assert not per["val"] & per["train"]
    # AVA's official test is untouched
    ava = t[t["dataset"] == "ava"].set_index("image_id")
    official_test = {str(i) for i in np.flatnonzero(ava_split == "test")}
    assert set(ava.index[ava["split"] == "test"]) == official_test
    # EVA twins of AVA test images are EVA test images
    eva = t[t["dataset"] == "eva"].set_index("image_id")
    assert official_test & set(eva.index) <= set(eva.index[eva["split"] == "test"])
    # counts add up, and every removal names the group and where it is held out
    total = sum(len(x) for x in tables.values())
    assert len(t) + len(mix.removed) == total
    assert len(mix.removed) > 0
    for r in mix.removed.itertuples():
        held = "test" if r.reason.split(" is in ")[1].startswith("test") else "val"
        holders = r.reason.split(" of ")[1].split(", ")
        assert r.reason.startswith(f"group {r.group} is in {held} of ")
        assert any(
            ((t["dataset"] == h) & (t["group"] == r.group) & (t["split"] == held)).any() for h in holders
        )
    assert mix.missing == {k: ["images/gone.jpg"] for k in ("ava", "eva", "other")}
    # labels follow the thresholds on the common scale
    np.testing.assert_array_equal(t["label"], np.searchsorted([5.0, 6.0], t["score"], side="left"))
    assert len(mix.split("test")) == (t["split"] == "test").sum()
    paths = mix.abs_paths(t.head(2))
    assert paths[0] == str(mix.roots[t["dataset"].iloc[0]]) + "/" + t["path"].iloc[0]
    assert len(mix.fingerprint) == 16


def test_build_is_deterministic_and_seed_changes_it(fake_sources) -> None:
    tables, _ = fake_sources
    ava_eva_tables(tables)
    data = {"name": "m", "seed": 0, "sources": {"ava": source(), "eva": source()}}
    a, b = build_mixture(data, THRESHOLDS), build_mixture(data, THRESHOLDS)
    assert a.fingerprint == b.fingerprint
    assert build_mixture({**data, "seed": 1}, THRESHOLDS).fingerprint != a.fingerprint


def test_keep_classes_thresholds_override_max_samples_and_weights(fake_sources) -> None:
    tables, seen = fake_sources
    tables["ava"] = synthetic("ava", range(2000), None, "ava")
    tables["koniq"] = synthetic("koniq", range(2000), None, "koniq", lo=1.0, hi=5.0, seed=3)
    data = {
        "name": "m",
        "seed": 0,
        "val_fraction": 0.1,
        "test_fraction": 0.1,
        "sources": {
            "ava": source(weight=2.0, thresholds={"t1": 4.0, "t2": 7.0}, max_samples=300),
            "koniq": source(weight=0.5, keep_classes=[0]),
        },
    }
    mix = build_mixture(data, THRESHOLDS)
    assert all(k not in cfg for cfg in seen for k in ("weight", "thresholds", "keep_classes", "max_samples"))
    t = mix.table
    ava, koniq = t[t["dataset"] == "ava"], t[t["dataset"] == "koniq"]
    assert mix.source_thresholds == {"ava": (4.0, 7.0), "koniq": (5.0, 6.0)}
    np.testing.assert_array_equal(ava["label"], np.searchsorted([4.0, 7.0], ava["score"], side="left"))
    # koniq keeps bad images only, in every split
    assert set(koniq["label"]) == {0} and set(koniq["split"]) == {"train", "val", "test"}
    assert mix.dropped["koniq"]["keep_classes"] == int((tables["koniq"]["score"] > 5.0).sum())
    assert (koniq["score"] <= 5.0).sum() == len(koniq)
    # max_samples caps train only; val/test are those of the uncapped mixture
    assert (ava["split"] == "train").sum() == 300
    uncapped = build_mixture({**data, "sources": {"ava": source()}}, THRESHOLDS).table
    for s in ("val", "test"):
        assert set(ava.loc[ava["split"] == s, "image_id"]) == set(
            uncapped.loc[uncapped["split"] == s, "image_id"]
        )
    assert mix.dropped["ava"]["max_samples"] == (uncapped["split"] == "train").sum() - 300
    # caps are nested: a larger cap keeps a superset
    data400 = {**data, "sources": {**data["sources"], "ava": source(max_samples=400)}}
    big = build_mixture(data400, THRESHOLDS).table
    train = lambda df: set(df.loc[(df["dataset"] == "ava") & (df["split"] == "train"), "image_id"])  # noqa: E731
    assert train(ava) < train(big)
    assert set(ava["source_weight"]) == {2.0} and set(koniq["source_weight"]) == {0.5}


@pytest.mark.parametrize(
    ("src", "message"),
    [
        (source(keep_class=[0]), "unknown key 'keep_class'.*Did you mean 'keep_classes'"),
        (source(wieght=1.0), "Did you mean 'weight'"),
        (source(weight=-1), "positive number"),
        (source(keep_classes=[3]), "not a class"),
        (source(keep_classes=[]), "keeps nothing"),
        (source(max_samples=0), "positive integer"),
        (source(thresholds={"t1": 6, "t2": 5}), "t1 < t2"),
        ({"weight": 1.0}, "no dataset config"),
    ],
)
def test_bad_source_configs_are_errors(fake_sources, src, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_mixture({"name": "m", "sources": {"ava": src}}, THRESHOLDS)


def test_bad_mixture_keys_are_errors(fake_sources) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'val_fraction'"):
        build_mixture({"name": "m", "val_fracton": 0.1, "sources": {"ava": source()}}, THRESHOLDS)
    with pytest.raises(ConfigError, match="no sources"):
        build_mixture({"name": "m", "sources": {}}, THRESHOLDS)


def test_keep_classes_by_name_and_single_source(fake_sources) -> None:
    tables, _ = fake_sources
    tables["ava"] = synthetic("ava", range(500), None, "ava")
    mix = build_mixture({"name": "m", "sources": {"ava": source(keep_classes=["good", "bad"])}}, THRESHOLDS)
    assert set(mix.table["label"]) == {0, 2}
    single = single_source_mixture(
        OmegaConf.create({"name": "ava", **source()}), THRESHOLDS, seed=0, val_fraction=0.2, test_fraction=0.2
    )
    assert single.name == "ava" and len(single.table) == 500
    assert single.table["split"].value_counts(normalize=True)["test"] == pytest.approx(0.2, abs=0.06)


def test_held_out_source_is_only_tested_on_the_same_images(fake_sources) -> None:
    tables, _ = fake_sources
    # the demo's shape: two sources share their groups (photographs)
    tables["a"] = synthetic("a", range(600), None, "photo")
    tables["b"] = synthetic("b", range(600), None, "photo", lo=1.0, hi=5.0, seed=4)
    data = {"name": "m", "seed": 3, "val_fraction": 0.2, "test_fraction": 0.2}
    data["sources"] = {"a": source(), "b": source()}
    full = build_mixture(data, THRESHOLDS).table
    mix = build_mixture({**data, "held_out": "b"}, THRESHOLDS)
    t = mix.table
    b = t[t["dataset"] == "b"]
    assert set(b["split"]) == {"test"} and mix.held_out == "b"
    ids = lambda df, ds, s: set(df.loc[(df["dataset"] == ds) & (df["split"] == s), "image_id"])  # noqa: E731
    assert ids(t, "b", "test") == ids(full, "b", "test")  # the in-domain run's test images, paired
    for s in ("train", "val", "test"):
        assert ids(t, "a", s) == ids(full, "a", s)  # the other source is untouched
    assert mix.dropped["b"]["held_out"] == int(((full["dataset"] == "b") & (full["split"] != "test")).sum())
    # no held-out test photograph is trained on through the other source
    assert not set(b["group"]) & set(t.loc[t["split"] != "test", "group"])
    with pytest.raises(ConfigError, match="'c' is not a source.*a, b"):
        build_mixture({**data, "held_out": "c"}, THRESHOLDS)
    with pytest.raises(ConfigError, match="only source"):
        build_mixture({**data, "held_out": "a", "sources": {"a": source()}}, THRESHOLDS)


@pytest.mark.slow
def test_lodo_demo_preset_sweeps_every_demo_source() -> None:
    from iqs.core.config import compose, conf_dir

    preset = OmegaConf.load(conf_dir() / "experiment" / "lodo_demo.yaml")
    swept = str(preset.hydra.sweeper.params["data.held_out"]).split(",")
    cfg = compose("train", ["experiment=lodo_demo"])
    assert cfg.data.held_out is None and sorted(swept) == sorted(cfg.data.sources)
    for name in swept:
        assert compose("train", ["experiment=lodo_demo", f"data.held_out={name}"]).data.held_out == name


def test_build_mixture_reads_only_what_exists(tmp_path: Path) -> None:
    """Building the demo is the commands' explicit step (`ensure_data`), not a side effect of reading."""
    from iqs.core.config import compose
    from iqs.core.errors import DataError

    cfg = compose("train", [f"paths.data_dir={tmp_path}"])
    with pytest.raises((DataError, FileNotFoundError)):
        build_mixture(cfg.data, cfg.thresholds)
    assert not (tmp_path / "demo").exists()
