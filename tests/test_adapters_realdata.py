"""Dataset adapters on the datasets' real annotation files (skipped when ../shared/realdata is absent)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from tests.conftest import adapter_settings

from iqs.core.errors import DataError
from iqs.data.adapters import load_source

pytestmark = pytest.mark.realdata


def cfg(name: str, adapter: str, root, annotations, native_range, **kw) -> dict:
    return dict(
        **{**adapter_settings(adapter), **kw},
        name=name,
        adapter=adapter,
        root=str(root),
        annotations=annotations,
        images="images",
        native_range=native_range,
        check_images=False,
        group_file=None,
    )


def test_ava_test_votes_match_direct_computation(realdata, tmp_path):
    votes = realdata / "ava" / "ava_generic_test_votes.csv"
    src = load_source(cfg("ava", "ava", tmp_path, str(votes), [1, 10], test_list=None))
    raw = pd.read_csv(votes)
    counts = raw[[f"score{k}" for k in range(2, 12)]].to_numpy(dtype=float)
    mean = counts @ np.arange(1, 11) / counts.sum(axis=1)
    t = src.table
    assert len(t) == len(raw) == 19_928
    assert t["image_id"].tolist() == raw["image_id"].astype(str).tolist()
    np.testing.assert_allclose(t["raw_score"], mean)
    np.testing.assert_allclose(t["score"], raw["quality"], rtol=1e-9)  # the file's own mean column agrees
    assert t["split"].isna().all()


def test_ava_official_test_list_assigns_splits(realdata):
    ava = realdata / "ava"
    both = pd.concat(
        [pd.read_csv(ava / "ava_generic_test_votes.csv"), pd.read_csv(ava / "ava_train_subset_votes.csv")]
    )
    listed = set(pd.read_csv(ava / "aesthetics_image_lists/generic_test.jpgl", header=None)[0].astype(str))
    for votes, expected in (
        ("ava_generic_test_votes.csv", "test"),
        ("ava_train_subset_votes.csv", "trainval"),
    ):
        t = load_source(cfg("ava", "ava", ava, votes, [1, 10])).table  # default test_list: the official one
        assert (t["split"] == expected).all()
        assert t["image_id"].isin(listed).all() == (expected == "test")
    assert len(listed) == 20_000 and len(listed - set(both["image_id"].astype(str))) == 72


def test_koniq_sets_file_scale_must_be_declared(realdata):
    root = realdata / "koniq10k"
    with pytest.raises(DataError) as err:
        load_source(cfg("koniq10k", "koniq10k", root, "koniq10k_distributions_sets.csv", [1, 5]))
    msg = str(err.value)
    assert "koniq10k_distributions_sets.csv, row 2" in msg
    assert "value outside the declared range [1, 5]: 77.3836" in msg and "native_range=" in msg
    t = load_source(cfg("koniq10k", "koniq10k", root, "koniq10k_distributions_sets.csv", [0, 100])).table
    assert len(t) == 10_073
    assert t["split"].value_counts().to_dict() == {"train": 7058, "test": 2015, "val": 1000}
    assert t["group"].iloc[0] == "koniq10k:10004473376.jpg"


def test_koniq_scores_file_with_official_split(realdata):
    root = realdata / "koniq10k"
    scores = load_source(
        cfg("koniq10k", "koniq10k", root, "koniq10k_scores_and_distributions.csv", [1, 5], split_file=None)
    ).table
    assert len(scores) == 10_073 and scores["split"].isna().all()
    raw = pd.read_csv(root / "koniq10k_scores_and_distributions.csv")
    np.testing.assert_allclose(scores["raw_score"], raw["MOS"])
    np.testing.assert_allclose(scores["n_votes"], raw["c_total"])
    joined = load_source(
        cfg(
            "koniq10k",
            "koniq10k",
            root,
            "koniq10k_scores_and_distributions.csv",
            [1, 5],
            split_file="koniq10k_distributions_sets.csv",
        )
    ).table
    sets = load_source(cfg("koniq10k", "koniq10k", root, "koniq10k_distributions_sets.csv", [0, 100])).table
    pd.testing.assert_series_equal(joined["split"], sets["split"])
    # counts in one file, fractions in the other: the same vote distribution
    np.testing.assert_allclose(joined.filter(like="dist_"), sets.filter(like="dist_"), atol=1e-9)


def test_eva_seed_jsons_merge_to_distinct_images(realdata):
    files = [realdata / "eva" / "seed_split" / f"samples_{s}.json" for s in ("train", "test")]
    t = load_source(cfg("eva", "eva", realdata / "eva", [str(f) for f in files], [0, 10])).table
    assert len(t) == t["image_id"].nunique() == 4_070
    assert t["split"].isna().all() and t["group"].str.startswith("ava:").all()
    # direct computation: sum the per-file histograms of scores 1..10 for every image
    total: dict[str, np.ndarray] = {}
    for f in files:
        for e in json.loads(f.read_text()):
            total[str(e["image_id"])] = total.get(str(e["image_id"]), 0) + np.asarray(e["label"], float)
    counts = np.stack([total[i] for i in t["image_id"]])
    np.testing.assert_allclose(t["n_votes"], counts.sum(axis=1))
    np.testing.assert_allclose(t["raw_score"], counts @ np.arange(1, 11) / counts.sum(axis=1))


def test_spaq_reads_bom_header(realdata):
    src = load_source(
        cfg("spaq", "spaq", realdata / "spaq", "SPAQ_annotations.csv", [0, 100], default_std=1.0)
    )
    t = src.table
    assert len(t) == 11_125 and t["image_id"].iloc[0] == "00001.jpg"
    assert t["raw_score"].iloc[0] == pytest.approx(48.86)
    assert t["group"].iloc[0] == "spaq:00001.jpg"


def test_html_page_saved_as_csv_fails_clearly(realdata):
    root = realdata / "bad_inputs"
    for adapter, rng in (("koniq10k", [1, 5]), ("ava", [1, 10]), ("csv", [0, 100])):
        with pytest.raises(DataError) as err:
            load_source(cfg(adapter, adapter, root, "koniq10k_html_page_saved_as.csv", rng, default_std=1.0))
        msg = str(err.value)
        assert "koniq10k_html_page_saved_as.csv" in msg
        assert "does not look like the expected annotation file" in msg and "HTML page" in msg
        assert "download the raw file" in msg
