"""Star-rating cuts, the burst margin and best-of-burst decisions (iqs.train.decision_cuts, iqs.data.bursts)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from iqs.core.scale import assign_labels
from iqs.data.bursts import best_of_bursts, burst_ids, burst_ids_or_single
from iqs.metrics.label_rule import stars_for
from iqs.train.decision_cuts import CutsConfig, burst_margin, quantile_cuts, rating_cuts


def test_stars_count_the_cuts_below_the_score() -> None:
    cuts = [2.0, 4.0, 6.0, 8.0]
    score = np.array([1.0, 2.0, 2.1, 4.0, 5.0, 6.0, 7.9, 8.0, 8.1, 99.0])
    assert stars_for(score, cuts).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


@pytest.mark.parametrize(
    "shares", [[0.1, 0.2, 0.4, 0.2, 0.1], [0.3, 0.0, 0.3, 0.0, 0.4], [0.05, 0.05, 0.1, 0.3, 0.5]]
)
def test_quantile_cuts_reproduce_the_shares(shares: list[float]) -> None:
    score = np.random.default_rng(1).normal(size=1000)
    cuts = quantile_cuts(score, shares)
    assert cuts == sorted(cuts)
    got = np.bincount(stars_for(score, cuts) - 1, minlength=5) / len(score)
    np.testing.assert_allclose(got, shares, atol=1.5 / len(score))


def test_nested_rating_cuts_agree_with_the_class_cuts() -> None:
    """Without shares, stars and classes agree under digiKam's rating_classes [1, 3]."""
    rng = np.random.default_rng(2)
    score = rng.normal(5.5, 1.5, size=500)
    t1, t2 = 4.8, 6.3
    cuts = rating_cuts(score, (t1, t2))
    assert cuts[0] == t1 and cuts[2] == t2
    assert cuts[1] == pytest.approx(np.median(score[(score > t1) & (score <= t2)]))
    assert cuts[3] == pytest.approx(np.median(score[score > t2]))
    stars, classes = stars_for(score, cuts), assign_labels(score, t1, t2)
    star_class = np.where(stars <= 1, 0, np.where(stars <= 3, 1, 2))
    np.testing.assert_array_equal(star_class, classes)


def test_rating_shares_are_checked() -> None:
    with pytest.raises(ValueError, match="5 shares"):
        CutsConfig.from_cfg({"rating_shares": [0.5, 0.5]})
    with pytest.raises(ValueError, match="burst_precision"):
        CutsConfig.from_cfg({"burst_precision": 1.0})
    assert CutsConfig.from_cfg({"rating_shares": [0.2] * 5}).rating_shares == (0.2,) * 5


def _brute_margin(val: pd.DataFrame, precision: float) -> float | None:
    """The definition, pair by pair: the smallest candidate gap d whose pairs with |Δpred| > d are ordered
    right in >= precision of the cases."""
    gaps, right = [], []
    for _, g in val.groupby("group"):
        for (_, a), (_, b) in itertools.combinations(g.iterrows(), 2):
            if a.score == b.score:
                continue
            gaps.append(abs(a.pred_score - b.pred_score))
            right.append(np.sign(a.pred_score - b.pred_score) == np.sign(a.score - b.score))
    gaps, right = np.array(gaps), np.array(right)
    for d in sorted({0.0, *gaps}):  # from the smallest up: the first that holds
        above = gaps > d
        if above.any() and right[above].mean() >= precision:
            return d
    return None


def test_burst_margin_matches_its_definition() -> None:
    rng = np.random.default_rng(3)
    n = 60
    truth = rng.normal(size=n)
    val = pd.DataFrame(
        {
            "group": rng.integers(0, 6, n).astype(str),
            "score": truth,
            "pred_score": truth + rng.normal(scale=0.6, size=n),
        }
    )
    for precision in (0.7, 0.9, 0.97):
        got = burst_margin(val, precision)
        want = _brute_margin(val, precision)
        assert got is not None and want is not None
        # the same pairs lie above both: got sits between want and the next wider gap
        keep = val.groupby("group").filter(lambda g: len(g) > 1)
        pairs = [
            abs(a - b)
            for _, g in keep.groupby("group")
            for (a, ta), (b, tb) in itertools.combinations(zip(g.pred_score, g.score, strict=True), 2)
            if ta != tb
        ]
        assert sum(p > got for p in pairs) == sum(p > want for p in pairs)


def test_burst_margin_is_none_without_pairs_or_skill() -> None:
    alone = pd.DataFrame({"group": ["a", "b"], "score": [1.0, 2.0], "pred_score": [0.0, 1.0]})
    assert burst_margin(alone, 0.9) is None
    wrong = pd.DataFrame({"group": ["a"] * 4, "score": [1.0, 2, 3, 4], "pred_score": [4.0, 3, 2, 1]})
    assert burst_margin(wrong, 0.6) is None


def test_best_of_bursts_keeps_the_top_k_and_rejects_the_clearly_worse() -> None:
    bursts = ["a", "a", "a", "a", "b", "b", "c"]
    scores = [5.0, 7.0, 6.5, 3.0, 4.0, 4.0, 1.0]
    picks = best_of_bursts(bursts, scores, top_k=1, margin=1.0)
    assert [p.rank for p in picks] == [3, 1, 2, 4, 1, 2, 1]
    assert [p.decision for p in picks] == ["reject", "keep", "model", "reject", "keep", "model", "model"]
    two = best_of_bursts(bursts, scores, top_k=2, margin=None)
    assert [p.decision for p in two] == ["model", "keep", "keep", "model", "keep", "keep", "model"]
    assert {p.size for p in two[:4]} == {4}
    with pytest.raises(ValueError, match="burst_top_k"):
        best_of_bursts(bursts, scores, top_k=0)


def test_photos_without_a_time_are_their_own_burst() -> None:
    paths = ["x/1.jpg", "x/2.jpg", "x/3.jpg", "x/4.jpg", "y/5.jpg"]
    times = [100.0, 103.0, None, 200.0, 101.0]
    got = burst_ids_or_single(paths, times, 10)
    timed = burst_ids(["x", "x", "x", "y"], [100.0, 103.0, 200.0, 101.0], 10)
    assert got[2] == "x/3.jpg"
    assert list(got[[0, 1, 3, 4]]) == list(timed)
    assert got[0] == got[1] != got[3]
    assert len(set(got)) == 4


def test_the_cuts_and_margin_are_baked_into_the_checkpoint(tmp_path) -> None:
    import torch

    from iqs.train.decision_cuts import bake_into_checkpoint, culling_meta

    rng = np.random.default_rng(4)
    truth = rng.normal(5, 2, 200)
    val = pd.DataFrame({"group": rng.integers(0, 10, 200).astype(str), "score": truth,
                        "pred_score": truth + rng.normal(scale=0.5, size=200)})  # fmt: skip
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "iqs_meta": {"head": "regression"}}, path)
    cfg = CutsConfig.from_cfg({"rating_shares": [0.1, 0.2, 0.4, 0.2, 0.1]})
    meta = culling_meta(val, (4.0, 6.0), cfg)
    bake_into_checkpoint(path, (4.0, 6.0), extra=meta)
    baked = torch.load(path, weights_only=True)["iqs_meta"]
    assert baked["head"] == "regression" and baked["decision_cuts"] == [4.0, 6.0]
    assert baked["rating_cuts"] == quantile_cuts(val["pred_score"].to_numpy(), cfg.rating_shares)
    assert baked["burst_margin"] == burst_margin(val, 0.9) is not None
    off = culling_meta(val, (4.0, 6.0), CutsConfig.from_cfg({"ratings": False, "burst_precision": None}))
    assert off == {}


def test_star_shares_follow_the_users_rated_training_photos(library) -> None:
    from tests.conftest import digikam_cfg

    from iqs.data.demo.library import read_manifest
    from iqs.train.personal import star_shares

    frames = pd.DataFrame(read_manifest(library)["frames"])
    rated = frames.dropna(subset=["stars"]).reset_index(drop=True)
    table = pd.DataFrame({"path": rated["path"], "split": np.where(rated.index % 2 == 0, "train", "test")})
    cfg = dict(digikam_cfg(library, "digikam_xmp", label_from="rating"))
    train = rated[table["split"] == "train"]
    want = np.bincount(train["stars"].clip(lower=1).astype(int) - 1, minlength=5) / len(train)
    np.testing.assert_allclose(star_shares(table, cfg), want)
    assert star_shares(table, {**cfg, "adapter": "csv"}) is None
