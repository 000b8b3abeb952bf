from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iqs.data.splits import assign_splits, dedupe, group_uniform
from iqs.data.table import make_table


def table(name: str, ids, split=None, group=None, seed: int = 0) -> pd.DataFrame:
    ids = [str(i) for i in ids]
    rng = np.random.default_rng(seed)
    score = rng.uniform(1, 10, len(ids))
    dist = np.full((len(ids), 10), 0.1)
    return make_table(name, ids, [f"{i}.jpg" for i in ids], score, score, dist, split=split, group=group)


def groups_per_split(df: pd.DataFrame) -> dict[str, set[str]]:
    return {s: set(df.loc[df["split"] == s, "group"]) for s in ("train", "val", "test")}


def test_group_uniform_is_seeded_and_uniform() -> None:
    groups = [f"g{i}" for i in range(20_000)]
    u0, u0b, u1 = group_uniform(groups, 0), group_uniform(groups[::-1], 0)[::-1], group_uniform(groups, 1)
    np.testing.assert_array_equal(u0, u0b)  # depends on the name, not the position
    assert not np.array_equal(u0, u1)
    assert ((u0 >= 0) & (u0 < 1)).all()
    from scipy.stats import kstest

    assert kstest(u0, "uniform").pvalue > 1e-3


def test_seeded_split_is_deterministic_and_groups_never_straddle() -> None:
    # 3,000 groups of 1-4 rows each (synthetic distortions of one reference photo share a group)
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 5, 3000)
    groups = np.repeat([f"ref{i}" for i in range(3000)], sizes)
    df = table("synth", range(len(groups)), group=groups)
    a = assign_splits(df, seed=7, val_fraction=0.1, test_fraction=0.2)
    shuffled = df.sample(frac=1.0, random_state=3)
    b = assign_splits(shuffled, seed=7, val_fraction=0.1, test_fraction=0.2).reindex(df.index)
    pd.testing.assert_series_equal(a, b)  # row order does not matter
    c = assign_splits(df, seed=8, val_fraction=0.1, test_fraction=0.2)
    assert (a != c).any()

    out = df.assign(split=a)
    per = groups_per_split(out)
    assert not (per["train"] & per["val"] or per["train"] & per["test"] or per["val"] & per["test"])
    frac = out["split"].value_counts(normalize=True)
    # binomial noise over 3,000 groups: sd about 0.007 for 0.2
    assert frac["test"] == pytest.approx(0.2, abs=0.03)
    assert frac["val"] == pytest.approx(0.1, abs=0.03)
    assert frac["train"] == pytest.approx(0.7, abs=0.03)


def test_official_splits_untouched_and_trainval_never_test() -> None:
    n = 4000
    rng = np.random.default_rng(1)
    official = rng.choice(np.array(["train", "val", "test", "trainval", None], dtype=object), n)
    df = table("src", range(n), split=official)
    out = assign_splits(df, seed=0, val_fraction=0.1, test_fraction=0.1)
    fixed = pd.Series(official).isin(["train", "val", "test"]).to_numpy()
    np.testing.assert_array_equal(out[fixed].to_numpy(), official[fixed])
    tv = official == "trainval"
    assert set(out[tv]) == {"train", "val"}
    assert (out[tv] == "val").mean() == pytest.approx(0.1, abs=0.03)
    assert set(out[pd.isna(official)]) == {"train", "val", "test"}


def test_same_group_same_split_in_every_source() -> None:
    ids = range(2000)
    a = table("a", ids, group=[f"img:{i}" for i in ids])
    b = table("b", list(ids)[500:], group=[f"img:{i}" for i in list(ids)[500:]], seed=1)
    both = pd.concat([a, b], ignore_index=True)
    split = assign_splits(both, seed=3, val_fraction=0.15, test_fraction=0.15)
    per_group = both.assign(split=split).groupby("group")["split"].nunique()
    assert (per_group == 1).all()
    # and a source's seeded split does not depend on what else is in the mixture
    alone = assign_splits(a, seed=3, val_fraction=0.15, test_fraction=0.15)
    np.testing.assert_array_equal(alone.to_numpy(), split[: len(a)].to_numpy())


def test_unassigned_rows_inherit_an_official_split_of_their_group() -> None:
    official = table(
        "ava", range(100), split=["test"] * 30 + ["trainval"] * 70, group=[f"ava:{i}" for i in range(100)]
    )
    twins = table("eva", range(100), group=[f"ava:{i}" for i in range(100)])
    both = pd.concat([official, twins], ignore_index=True)
    split = assign_splits(both, seed=0, val_fraction=0.1, test_fraction=0.1).to_numpy()
    np.testing.assert_array_equal(split[100:130], ["test"] * 30)
    np.testing.assert_array_equal(split[130:], split[30:100])  # trainval twins follow AVA's seeded train/val
    assert "test" not in set(split[130:])


def test_dedupe_removes_train_and_val_copies_of_held_out_groups() -> None:
    a = table("a", range(6), split=["test", "val", "train", "train", "val", "train"], group=list("ABCDEF"))
    b = table("b", range(6), split=["train", "train", "val", "test", "test", "train"], group=list("ABCDEG"))
    both = pd.concat([a, b], ignore_index=True)
    kept, removed = dedupe(both)
    assert len(kept) + len(removed) == len(both)
    per = groups_per_split(kept)
    assert not (per["train"] & per["test"] or per["val"] & per["test"] or per["train"] & per["val"])
    got = {(r.dataset, r.group, r.split): r.reason for r in removed.itertuples()}
    assert got == {
        ("b", "A", "train"): "group A is in test of a",
        ("a", "D", "train"): "group D is in test of b",
        ("a", "E", "val"): "group E is in test of b",
        ("b", "B", "train"): "group B is in val of a",
        ("a", "C", "train"): "group C is in val of b",
    }


def test_bad_fractions_are_errors() -> None:
    df = table("x", range(10))
    with pytest.raises(ValueError, match="< 1"):
        assign_splits(df, seed=0, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        assign_splits(df, seed=0, val_fraction=-0.1, test_fraction=0.1)
