from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import open_dict
from PIL import Image
from scipy import stats

from iqs.core.scale import to_common
from iqs.data.demo import DemoSpec, build_demo, ensure_demo, main, read_build
from iqs.data.demo.distortions import DISTORTIONS, HIGH_QUALITY
from iqs.data.demo.references import PHOTOS, load_photo, make_references, plan_crops
from iqs.data.demo.scoring import PANELS, simulate_votes

# a small build: 6 photos x 2 crops, 3 sources x (1 + 3 types x 3 levels) images per crop = 360 images
SMALL = DemoSpec(
    crops_per_photo=2,
    long_side=160,
    photos=("astronaut", "chelsea", "coffee", "rocket", "china", "grace_hopper"),
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    return ensure_demo(out, seed=0, spec=SMALL, progress=False)


def read_ava(root: Path) -> pd.DataFrame:
    df = pd.read_csv(root / "ava" / "AVA.txt", sep=" ", header=None)
    counts = df.iloc[:, 2:12].to_numpy()
    return pd.DataFrame(
        {
            "image_id": df[1].astype(str),
            "mos": counts @ np.arange(1, 11) / counts.sum(axis=1),
            "n": counts.sum(axis=1),
        }
    )


def read_koniq(root: Path) -> pd.DataFrame:
    df = pd.read_csv(root / "koniq" / "koniq10k_scores_and_distributions.csv")
    return df.rename(columns={"image_name": "image_id", "MOS": "mos"})


def read_spaq(root: Path) -> pd.DataFrame:
    df = pd.read_csv(root / "spaq" / "SPAQ_annotations.csv", encoding="utf-8-sig", dtype={"Image name": str})
    return df.rename(columns={"Image name": "image_id", "MOS": "mos"})


READERS = {"ava": read_ava, "koniq": read_koniq, "spaq": read_spaq}
RANGES = {"ava": (1, 10), "koniq": (1, 5), "spaq": (0, 100)}


def scored_meta(root: Path, source: str) -> pd.DataFrame:
    meta = pd.read_csv(root / "distortions.csv", dtype={"image_id": str})
    meta = meta[meta["source"] == source]
    scores = READERS[source](root)
    joined = meta.merge(scores[["image_id", "mos"]], on="image_id", how="inner", validate="one_to_one")
    assert len(joined) == len(meta) == len(scores)
    return joined


# ----------------------------------------------------------------------------- official formats


def test_ava_txt_has_the_official_15_columns(demo: Path) -> None:
    text = (demo / "ava" / "AVA.txt").read_text(encoding="ascii")
    rows = [line.split(" ") for line in text.splitlines()]
    assert {len(r) for r in rows} == {15}
    arr = np.array(rows, dtype=np.int64)
    assert (arr[:, 0] == np.arange(1, len(arr) + 1)).all()  # index column
    assert len(np.unique(arr[:, 1])) == len(arr)  # unique integer image ids
    counts = arr[:, 2:12]
    assert (counts >= 0).all() and ((counts.sum(1) >= 100) & (counts.sum(1) <= 250)).all()
    assert ((arr[:, 12:14] >= 0) & (arr[:, 12:14] <= 66)).all()  # tag ids, 0 = none
    assert (arr[:, 14] > 0).all()
    # real AVA's per-image vote spread is ~1.4 on 1..10: raters disagree, histograms are not spikes
    mean = counts @ np.arange(1, 11) / counts.sum(1)
    sd = np.sqrt(counts @ np.arange(1, 11) ** 2 / counts.sum(1) - mean**2)
    assert 1.0 < sd.mean() < 1.8


def test_koniq_csv_matches_the_official_header_and_statistics(demo: Path) -> None:
    path = demo / "koniq" / "koniq10k_scores_and_distributions.csv"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == '"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"'
    df = pd.read_csv(path)
    assert all(re.fullmatch(r"\d{10}\.jpg", n) for n in df["image_name"])
    assert list(df["image_name"]) == sorted(df["image_name"])
    counts = df[["c1", "c2", "c3", "c4", "c5"]].to_numpy()
    assert (counts.sum(1) == df["c_total"]).all()
    # MOS is the mean vote and SD the sample std of the votes (ddof=1), as in the official file
    votes = [np.repeat(np.arange(1, 6), c) for c in counts]
    np.testing.assert_allclose(df["MOS"], [v.mean() for v in votes], rtol=1e-12)
    np.testing.assert_allclose(df["SD"], [v.std(ddof=1) for v in votes], rtol=1e-12)
    assert df["MOS_zscore"].between(0, 100).all()
    # the z-scored MOS removes rater bias but keeps the order of the images
    assert stats.spearmanr(df["MOS"], df["MOS_zscore"])[0] > 0.95


def test_spaq_csv_has_bom_and_official_columns(demo: Path) -> None:
    raw = (demo / "spaq" / "SPAQ_annotations.csv").read_bytes()
    assert raw.startswith(
        b"\xef\xbb\xbfImage name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness\n"
    )
    assert b"\r\n" not in raw
    df = read_spaq(demo)
    assert all(re.fullmatch(r"\d{5}\.jpg", n) for n in df["image_id"])
    cols = ["mos", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"]
    assert df[cols].apply(lambda c: c.between(0, 100)).all().all()
    # at most two decimals, like the official file
    assert all(
        len(v.split(".")[-1]) <= 2 for v in raw.decode("utf-8-sig").split() if "." in v and "jpg" not in v
    )


def test_spaq_attribute_follows_the_distortion(demo: Path) -> None:
    meta = pd.read_csv(demo / "distortions.csv", dtype={"image_id": str})
    df = read_spaq(demo).merge(meta[meta["source"] == "spaq"], on="image_id")
    blurred = df[df["distortion"].isin(["gaussian_blur", "motion_blur"]) & (df["level"] >= 3)]
    # for a blurred photo, sharpness is rated below its overall score; brightness above it
    assert (
        (blurred["Sharpness"] - blurred["mos"]).mean() < 0 < (blurred["Brightness"] - blurred["mos"]).mean()
    )


# ----------------------------------------------------------------------------- scores


@pytest.mark.parametrize("source", ["ava", "koniq", "spaq"])
def test_scores_decrease_with_level_for_every_distortion(demo: Path, source: str) -> None:
    df = scored_meta(demo, source)
    pristine = df[df["level"] == 0]
    for name in DISTORTIONS.names():
        sub = pd.concat([pristine, df[df["distortion"] == name]])
        assert len(set(sub["level"])) >= 4, f"{source}/{name}: too few levels to test"
        rho = stats.spearmanr(sub["level"], sub["mos"])[0]
        assert rho < -0.5, f"{source}/{name}: Spearman(level, MOS) = {rho:.2f}"
    # the latent quality (severity + small reference offsets) orders the published scores
    assert stats.spearmanr(df["latent_quality"], df["mos"])[0] > 0.95


def test_each_source_has_its_own_skew(demo: Path) -> None:
    ava = read_ava(demo)["mos"]
    assert 5.0 <= ava.mean() <= 6.0 and ava.std() < 1.0
    # tails are rare, as in AVA: few images far from the mean
    assert ((ava < 4.0) | (ava > 7.0)).mean() < 0.1
    koniq = read_koniq(demo)["mos"]
    assert 2.9 <= koniq.mean() <= 3.5
    assert stats.skew(koniq) < 0  # mid-high with a low tail
    spaq = read_spaq(demo)["mos"]
    assert 40 <= spaq.mean() <= 60
    common = {s: to_common(READERS[s](demo)["mos"], *RANGES[s]) for s in READERS}
    assert common["spaq"].std() > 1.5 * common["ava"].std()


def test_skews_come_from_content_so_the_common_scale_agrees_across_sources(demo: Path) -> None:
    meta = pd.read_csv(demo / "distortions.csv", dtype={"image_id": str})
    damaged = meta[meta["level"] > 0]
    share = damaged.groupby("source")["level"].value_counts(normalize=True).unstack(fill_value=0.0)
    # AVA-like: rarely ruined; KonIQ-like: mostly mild damage; SPAQ-like: every level
    assert share.loc["ava", 5] < share.loc["spaq", 5] and share.loc["ava", [2, 3]].sum() > 0.45
    assert share.loc["koniq", 1] > share.loc["spaq", 1] and share.loc["koniq", 5] < share.loc["spaq", 5]
    pooled = pd.concat(
        [scored_meta(demo, s).assign(common=lambda d, s=s: to_common(d["mos"], *RANGES[s])) for s in READERS]
    )
    # one damage, about one common score in every source: the latent quality orders the pooled scores
    assert stats.spearmanr(pooled["latent_quality"], pooled["common"])[0] > 0.94


def test_rater_votes_carry_rater_bias() -> None:
    panel = PANELS["koniq"]
    means = np.full(400, 3.0)
    votes = simulate_votes(means, panel, np.random.default_rng(0))
    per_rater = pd.Series(votes.value).groupby(votes.rater).mean()
    counts = np.bincount(votes.rater)
    # a rater's mean vote differs from the others' by more than vote noise alone would make it
    expected_sd_without_bias = np.sqrt(np.mean(1 / counts[counts > 0])) * votes.value.std()
    assert per_rater.std() > 1.3 * expected_sd_without_bias
    assert set(np.unique(votes.value)) <= set(panel.vote_levels)


# ----------------------------------------------------------------------------- groups and images


def test_every_image_has_a_demo_group(demo: Path) -> None:
    meta = pd.read_csv(demo / "distortions.csv", dtype={"image_id": str})
    for source in READERS:
        groups = pd.read_csv(demo / source / "groups.csv", dtype=str)
        assert list(groups.columns) == ["image_id", "group"]
        ids = set(READERS[source](demo)["image_id"].astype(str))
        assert set(groups["image_id"]) == ids and groups["image_id"].is_unique
        assert groups["group"].str.startswith("demo:").all()
        m = meta[meta["source"] == source].merge(groups, on="image_id")
        # the group is the photograph: its crops overlap, so all of them (and their distortions) share a split
        assert (m["group"] == "demo:" + m["photo"]).all()


@pytest.mark.slow
def test_no_photograph_has_crops_in_two_splits(demo: Path) -> None:
    """Through the real mixture (conf/data/demo.yaml) at several seeds: every source, every photograph."""
    from iqs.core.config import compose
    from iqs.data.mixture import build_mixture

    meta = pd.read_csv(demo / "distortions.csv", dtype={"image_id": str})
    meta["dataset"] = "demo_" + meta["source"]
    for seed in (0, 1, 2):
        cfg = compose("train", [f"paths.data_dir={demo.parent}", f"data.seed={seed}"])
        with open_dict(cfg):
            cfg.data.demo_dir = None  # the small build above, not the full demo
        mix = build_mixture(cfg.data, cfg.thresholds)
        table = mix.table.merge(meta, on=["dataset", "image_id"], how="left", validate="one_to_one")
        assert table["photo"].notna().all() and set(table["dataset"]) == {
            "demo_ava",
            "demo_koniq",
            "demo_spaq",
        }
        splits_per_photo = table.groupby("photo")["split"].nunique()
        assert (splits_per_photo == 1).all(), splits_per_photo[splits_per_photo > 1]
        # ...while the crops of the small build do spread over train and a held-out split
        assert table["split"].nunique() >= 2 and table["reference"].nunique() > table["photo"].nunique()


def test_images_are_small_decodable_jpegs(demo: Path) -> None:
    meta = pd.read_csv(demo / "distortions.csv", dtype={"image_id": str})
    for source, sub in meta.groupby("source"):
        for rel in sub["path"].iloc[::7]:
            with Image.open(demo / source / rel) as im:
                assert im.format == "JPEG" and im.mode == "RGB"
                assert max(im.size) <= 384
                im.load()


def test_distortions_grow_with_level() -> None:
    ref = make_references(0, 1, 256, ["coffee"])[0].rgb
    for name in DISTORTIONS.names():
        d = DISTORTIONS.get(name)
        mse = []
        for level in range(1, 6):
            out = d(ref, level, np.random.default_rng(level))
            if d.quality(level) != HIGH_QUALITY:  # JPEG: the damage is the encoder's
                from iqs.data.demo.writers import encode_jpeg

                out = np.asarray(Image.open(io.BytesIO(encode_jpeg(out, d.quality(level)))).convert("RGB"))
            assert out.shape == ref.shape and out.dtype == np.uint8
            mse.append(float(np.mean((out.astype(float) - ref) ** 2)))
        assert all(a < b for a, b in zip(mse, mse[1:], strict=False)), f"{name}: {mse}"


def test_crops_overlap_little_and_photos_load_offline() -> None:
    for name in PHOTOS:
        img = load_photo(name)
        assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 250, name
    boxes = plan_crops(400, 600, 4, np.random.default_rng(0))
    assert len(boxes) == 4
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
            iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
            assert ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy) < 0.3


# ----------------------------------------------------------------------------- determinism and building


def _fingerprint(root: Path) -> dict[str, str]:
    files = ["ava/AVA.txt", "koniq/koniq10k_scores_and_distributions.csv", "spaq/SPAQ_annotations.csv"]
    files += [f"{s}/groups.csv" for s in READERS] + ["distortions.csv"]
    meta = pd.read_csv(root / "distortions.csv")
    files += [f"{s}/{p}" for s, p in zip(meta["source"], meta["path"], strict=True)][::11]
    return {f: _sha(root / f) for f in files}


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_differs(demo: Path, tmp_path: Path) -> None:
    build_demo(tmp_path / "again", seed=0, spec=SMALL, progress=False)
    assert _fingerprint(tmp_path / "again") == _fingerprint(demo)
    build_demo(tmp_path / "other", seed=1, spec=SMALL, progress=False)
    for f in ["ava/AVA.txt", "koniq/koniq10k_scores_and_distributions.csv", "spaq/SPAQ_annotations.csv"]:
        assert _sha(tmp_path / "other" / f) != _sha(demo / f)


def test_ensure_demo_is_idempotent_and_rebuilds_for_another_seed(tmp_path: Path) -> None:
    spec = DemoSpec(crops_per_photo=1, long_side=96, photos=("coffee", "camera"))
    out = tmp_path / "demo"
    assert ensure_demo(out, seed=0, spec=spec, progress=False) == out.resolve()
    mtime = (out / "BUILD.json").stat().st_mtime_ns
    ensure_demo(out, seed=0, spec=spec, progress=False)
    assert (out / "BUILD.json").stat().st_mtime_ns == mtime
    ensure_demo(out, seed=2, spec=spec, progress=False)
    assert read_build(out)["seed"] == 2
    # built beside the target and renamed: no temporary folders left behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["demo"]


def test_concurrent_ensure_demo_builds_once(tmp_path: Path) -> None:
    spec = DemoSpec(crops_per_photo=1, long_side=96, photos=("coffee",))
    out = tmp_path / "demo"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ensure_demo(out, seed=0, spec=spec, progress=False)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rec = read_build(out)
    assert rec is not None and rec["images"] == sum(len(READERS[s](out)) for s in READERS)


def test_cli_rejects_bad_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["out_dir=" + str(tmp_path / "x"), "sed=1"]) == 2
    assert "did you mean 'seed'" in capsys.readouterr().out
    assert main(["out_dir"]) == 2
    assert main(["force=maybe"]) == 2
    assert not (tmp_path / "x").exists()


def test_default_out_dir_follows_iqs_data_dir(tmp_path: Path, monkeypatch) -> None:
    from iqs.data.demo.command import default_out_dir

    monkeypatch.setenv("IQS_DATA_DIR", str(tmp_path))
    assert default_out_dir() == tmp_path / "demo"
    monkeypatch.delenv("IQS_DATA_DIR")
    monkeypatch.delenv("IQS_ROOT", raising=False)
    assert default_out_dir() == Path("data") / "demo"


@pytest.mark.slow  # builds the full-size demo (1000-3000 images)
def test_default_size_builds_fast_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"out_dir={tmp_path / 'demo'}", "seed=0"]) == 0
    rec = read_build(tmp_path / "demo")
    assert rec["seconds"] < 60
    assert len(rec["photos"]) == len(PHOTOS) and rec["references"] >= 50
    assert 1000 <= rec["images"] <= 3000
    out = capsys.readouterr().out
    assert "demo_ava" in out and "demo_spaq" in out
    assert os.access(tmp_path / "demo", os.R_OK | os.X_OK)


# ----------------------------------------------------------------------------- the real adapters


@pytest.mark.parametrize("name", ["demo_ava", "demo_koniq", "demo_spaq"])
def test_real_adapters_load_the_demo(demo: Path, name: str) -> None:
    adapters = pytest.importorskip("iqs.data.adapters", reason="the dataset adapters are not importable yet")
    from omegaconf import OmegaConf

    from iqs.core.config import conf_dir

    cfg = OmegaConf.create(
        {
            "paths": {"data_dir": str(demo.parent)},
            "dataset": OmegaConf.load(conf_dir() / "dataset" / f"{name}.yaml"),
        }
    )
    src = adapters.load_source(cfg.dataset)
    assert src.missing == []
    source = name.removeprefix("demo_")
    assert len(src.table) == len(READERS[source](demo))
    assert src.table["group"].str.startswith("demo:").all()
    lo, hi = RANGES[source]
    published = READERS[source](demo)
    expected = pd.Series(to_common(published["mos"], lo, hi), index=published["image_id"].astype(str))
    got = src.table.set_index("image_id")["score"]
    np.testing.assert_allclose(got.loc[expected.index], expected, rtol=1e-9)
