"""k-fold cross-validation over groups: folds, cv_id, pooling out-of-fold predictions, paired folds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats
from tests.test_mixture import THRESHOLDS, fake_sources, source, synthetic  # noqa: F401

from iqs.data.mixture import ConfigError, build_mixture
from iqs.data.splits import assign_folds, assign_splits
from iqs.report import cv

K = 5


def split_table(
    n_groups: int = 23, per_group: int = 4, official: dict[str, str] | None = None
) -> pd.DataFrame:
    """Rows of three sources sharing groups (the demo's shape); `official` maps group -> split."""
    rows = []
    for src in ("a", "b", "c"):
        for g in range(n_groups):
            for _ in range(per_group):
                group = f"photo{g}"
                rows.append({"dataset": src, "group": group, "split": (official or {}).get(group)})
    return pd.DataFrame(rows)


def test_every_group_is_tested_exactly_once_and_folds_are_balanced() -> None:
    df = split_table()
    tested: dict[str, int] = {}
    for fold in range(K):
        split = assign_splits(df, seed=7, val_fraction=0.2, test_fraction=0.0, folds=K, fold=fold)
        # a group has one split in every source of the mixture
        assert (df.assign(split=split).groupby("group")["split"].nunique() == 1).all()
        test_groups = set(df.loc[split == "test", "group"])
        assert not test_groups & set(tested), "a group is tested in two folds"
        tested.update(dict.fromkeys(test_groups, fold))
        assert len(test_groups) in (23 // K, 23 // K + 1)  # balanced to within one group
        # validation comes from the other folds, by group, about val_fraction of them
        val = set(df.loc[split == "val", "group"])
        assert val and not val & test_groups and len(val) <= 0.45 * (23 - len(test_groups))
    assert len(tested) == 23  # every group tested once
    # deterministic; another seed deals other folds
    again = assign_folds(df["group"], seed=7, folds=K)
    assert (again == assign_folds(df["group"], seed=7, folds=K)).all()
    assert (again != assign_folds(df["group"], seed=8, folds=K)).any()


def test_official_splits_are_left_alone_by_the_folds() -> None:
    official = {"photo0": "test", "photo1": "trainval", "photo2": "train"}
    df = split_table(official=official)
    for fold in range(K):
        split = assign_splits(df, seed=0, val_fraction=0.2, test_fraction=0.0, folds=K, fold=fold)
        by_group = df.assign(split=split).groupby("group")["split"].first()
        assert by_group["photo0"] == "test"  # the official test set is tested in every fold
        assert by_group["photo1"] in ("train", "val") and by_group["photo2"] == "train"
    with pytest.raises(ValueError, match="fold must be an integer in \\[0, 4\\]"):
        assign_splits(df, 0, 0.2, 0.0, folds=K, fold=5)
    with pytest.raises(ValueError, match="needs folds"):
        assign_splits(df, 0, 0.2, 0.1, folds=None, fold=1)


def test_mixture_folds_hold_out_photographs_in_every_source(fake_sources) -> None:  # noqa: F811
    tables, _ = fake_sources
    tables["a"] = synthetic("a", range(60), None, "photo")
    tables["b"] = synthetic("b", range(60), None, "photo", lo=1.0, hi=5.0, seed=4)
    data = {"name": "m", "seed": 3, "val_fraction": 0.2, "test_fraction": 0.2, "folds": K}
    data["sources"] = {"a": source(), "b": source()}
    seen: set[str] = set()
    for fold in range(K):
        mix = build_mixture({**data, "fold": fold}, THRESHOLDS)
        t = mix.table
        test = set(t.loc[t["split"] == "test", "group"])
        assert set(t.loc[(t["split"] == "test") & (t["dataset"] == "a"), "group"]) == test
        assert not test & set(t.loc[t["split"] != "test", "group"])
        assert not test & seen
        seen |= test
        assert (mix.folds, mix.fold) == (K, fold)
    assert len(seen) == 60
    with pytest.raises(ConfigError, match="data: fold must be"):
        build_mixture({**data, "fold": None}, THRESHOLDS)


def test_cv_id_ties_the_folds_of_one_configuration() -> None:
    base = {"seed": 0, "head": {"name": "regression"}, "data": {"name": "demo", "folds": 5, "fold": 0}}
    cfg = OmegaConf.create({**base, "paths": {"root_dir": "/x"}, "output_dir": "/x/0"})
    other_fold = OmegaConf.create(
        {**base, "data": {"name": "demo", "folds": 5, "fold": 3}, "output_dir": "/y"}
    )
    other_head = OmegaConf.create({**base, "head": {"name": "distribution"}})
    assert cv.cv_id_for(cfg) == cv.cv_id_for(other_fold) != cv.cv_id_for(other_head)
    assert cv.cv_tags(other_fold) == {"cv_id": cv.cv_id_for(cfg), "cv_fold": "3", "cv_folds": "5"}
    assert cv.cv_tags(OmegaConf.create({"data": {"name": "demo", "folds": None}})) == {}


def fold_predictions(quality: float, n_groups: int = 40, seed: int = 0) -> dict[int, pd.DataFrame]:
    """Out-of-fold predictions of a model whose error shrinks with `quality`; 3 images per group."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"photo{g}" for g in range(n_groups)], 3)
    photo_effect = np.repeat(rng.normal(0, 1.0, n_groups), 3)
    score = 5.5 + photo_effect + rng.normal(0, 0.6, len(groups))
    noise = np.random.default_rng(100).normal(0, 1.0, len(groups))  # shared: a paired design
    pred = score + noise / quality
    frame = pd.DataFrame(
        {
            "dataset": np.where(np.arange(len(groups)) % 2 == 0, "src_a", "src_b"),
            "image_id": [f"i{i}" for i in range(len(groups))],
            "path": [f"i{i}.jpg" for i in range(len(groups))],
            "group": groups,
            "score": score,
            "label": np.digitize(score, [5.0, 6.0], right=True),
            "pred_score": pred,
            "pred_class": np.digitize(pred, [5.0, 6.0], right=True),
        }
    )
    folds = assign_folds(frame["group"], seed=seed, folds=K)
    return {f: frame[folds == f].reset_index(drop=True) for f in range(K)}


def test_pooled_metrics_are_the_metrics_of_the_concatenated_out_of_fold_predictions() -> None:
    by_fold = fold_predictions(quality=2.0)
    result = cv.pool("cv-x", by_fold, K, ["srcc", "plcc", "macro_f1"], n_resamples=300)
    oof = pd.concat(by_fold.values())
    assert len(result.predictions) == len(oof) and set(result.predictions["fold"]) == set(range(K))
    srcc = result.pooled["all"]["srcc"]
    assert srcc.estimate == pytest.approx(stats.spearmanr(oof["score"], oof["pred_score"])[0], abs=1e-12)
    assert srcc.n_groups == 40 and srcc.low < srcc.estimate < srcc.high
    a = oof[oof["dataset"] == "src_a"]
    assert result.pooled["src_a"]["plcc"].estimate == pytest.approx(
        stats.pearsonr(a["score"], a["pred_score"])[0], abs=1e-12
    )
    per_fold = [stats.spearmanr(f["score"], f["pred_score"])[0] for f in by_fold.values()]
    mean, sd = result.per_fold["all"]["srcc"]
    assert mean == pytest.approx(np.mean(per_fold)) and sd == pytest.approx(np.std(per_fold, ddof=1))
    table = cv.report_frame(result)
    assert set(table.columns) >= {"pooled [95% CI]", "folds mean ± sd"} and len(table) == 3 * 3


def test_pooling_refuses_missing_folds_and_images_tested_twice() -> None:
    by_fold = fold_predictions(quality=2.0)
    with pytest.raises(cv.CVError, match="folds \\[4\\] of 5"):
        cv.pool_predictions({f: p for f, p in by_fold.items() if f != 4}, K)
    twice = {**by_fold, 1: pd.concat([by_fold[1], by_fold[0].head(2)])}
    with pytest.raises(cv.CVError, match="tested in 2 of 5 folds"):
        cv.pool_predictions(twice, K)
    # an official test image is tested in every fold: kept once
    official = by_fold[0].head(1)
    everywhere = {f: pd.concat([p, official]) if f else p for f, p in by_fold.items()}
    assert len(cv.pool_predictions(everywhere, K)) == sum(len(p) for p in by_fold.values())


def test_official_test_images_get_rows_of_their_own_next_to_the_out_of_fold_pool() -> None:
    """Images of an official test split are tested by every fold: not out-of-fold, so not pooled."""
    by_fold = fold_predictions(quality=2.0)
    rng = np.random.default_rng(9)
    groups = np.repeat([f"official{g}" for g in range(8)], 3)
    score = 5.5 + np.repeat(rng.normal(0, 1.0, 8), 3) + rng.normal(0, 0.6, len(groups))
    official = pd.DataFrame(
        {
            "dataset": "src_a",
            "image_id": [f"o{i}" for i in range(len(groups))],
            "group": groups,
            "score": score,
        }
    )
    official["path"] = official["image_id"] + ".jpg"
    official["label"] = np.digitize(score, [5.0, 6.0], right=True)
    # every fold's own model predicts the official images
    tested = {}
    for f, part in by_fold.items():
        pred = score + np.random.default_rng(f).normal(0, 1.0, len(score))
        mine = official.assign(pred_score=pred, pred_class=np.digitize(pred, [5.0, 6.0], right=True))
        tested[f] = pd.concat([part, mine], ignore_index=True)
    result = cv.pool("cv-x", tested, K, ["srcc"], n_resamples=200)
    oof = pd.concat(by_fold.values())
    assert result.pooled["all"]["srcc"].n_groups == 40  # the pool holds the out-of-fold images only
    assert result.pooled["all"]["srcc"].estimate == pytest.approx(
        stats.spearmanr(oof["score"], oof["pred_score"]).statistic
    )
    got = result.pooled["official-test/all"]["srcc"]
    fold0 = tested[0].iloc[len(by_fold[0]) :]
    assert got.n_groups == 8 and got.estimate == pytest.approx(
        stats.spearmanr(fold0["score"], fold0["pred_score"]).statistic
    )
    per_fold = [
        stats.spearmanr(t["score"].iloc[-24:], t["pred_score"].iloc[-24:]).statistic for t in tested.values()
    ]
    assert result.per_fold["official-test/all"]["srcc"][0] == pytest.approx(np.mean(per_fold))
    table = cv.report_frame(result).set_index("dataset")
    assert table.loc["official-test/all", "images"] == 24 and table.loc["all", "images"] == len(oof)
    assert table.loc["official-test/src_a", "groups"] == 8
    # paired configurations keep the two kinds of rows apart as well
    paired = cv.paired(result.predictions, result.predictions, ["srcc"], n_resamples=100)
    assert set(paired) == {"all", "src_a", "src_b", "official-test/all", "official-test/src_a"}


def test_pooled_cv_with_too_few_groups_prints_no_interval() -> None:
    keep = {f"photo{g}" for g in range(4)}
    by_fold = {f: p[p["group"].isin(keep)] for f, p in fold_predictions(quality=2.0).items()}
    result = cv.pool("cv-x", by_fold, K, ["srcc"], n_resamples=100)
    ci = result.pooled["all"]["srcc"]
    assert ci.n_groups == 4 and ci.too_few_groups
    row = cv.report_frame(result).iloc[0]
    assert row["pooled [95% CI]"].endswith("(n=4 groups: too few for an interval; use data.folds=k)")
    assert "[" not in row["pooled [95% CI]"]


def test_paired_folds_find_the_better_configuration() -> None:
    worse = cv.pool_predictions(fold_predictions(quality=1.0), K)
    better = cv.pool_predictions(fold_predictions(quality=3.0), K)
    result = cv.paired(worse, better, ["srcc", "plcc"], n_resamples=500)
    d = result["all"]["srcc"]
    assert d.delta > 0 and d.low > 0 and d.p_value < 0.01
    # the same configuration against itself: no difference
    same = cv.paired(worse, worse, ["srcc"], n_resamples=200)["all"]["srcc"]
    assert same.delta == 0 and same.low <= 0 <= same.high
    with pytest.raises(cv.CVError, match="tested different images"):
        cv.paired(worse, better.iloc[:-3], ["srcc"])


@pytest.mark.slow
def test_compare_pools_a_cv_id_from_the_store(tmp_path: Path, capsys, migrated_db: Path) -> None:
    from mlflow.tracking import MlflowClient

    from iqs.report.compare import main

    uri = f"sqlite:///{shutil.copy(migrated_db, tmp_path / 'mlflow.db')}"
    client = MlflowClient(uri)
    exp = client.create_experiment("cv", artifact_location=str(tmp_path / "artifacts"))
    ids = {}
    for name, quality in (("cv-worse", 1.0), ("cv-better", 3.0)):
        for fold, frame in fold_predictions(quality).items():
            run = client.create_run(exp, tags={"cv_id": name, "cv_fold": str(fold), "cv_folds": str(K)})
            csv = tmp_path / f"{name}-{fold}" / "test_predictions.csv"
            csv.parent.mkdir()
            frame.to_csv(csv, index=False)
            client.log_artifact(run.info.run_id, str(csv), "predictions")
            client.set_terminated(run.info.run_id)
            ids[name, fold] = run.info.run_id
    pooled = cv.pool_from_store(client, "cv-better", ["srcc"], n_resamples=200)
    assert pooled.run_ids == {f: ids["cv-better", f] for f in range(K)}
    assert len(pooled.predictions) == 120
    assert main(["cv=cv-better", f"logger.tracking_uri={uri}", "format=csv"]) == 0
    out = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert list(out["dataset"]) == ["all", "src_a", "src_b"] and out["groups"].iloc[0] == 40
    assert (
        main(["cv=cv-better", "baseline=cv-worse", f"logger.tracking_uri={uri}", "format=csv", "view=wide"])
        == 0
    )
    paired = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert paired.loc[(paired["dataset"] == "all") & (paired["metric"] == "srcc"), "p"].iloc[0] < 0.01
    assert main(["cv=cv-missing", f"logger.tracking_uri={uri}"]) == 2
    assert "no finished runs tagged cv_id=cv-missing" in capsys.readouterr().err
