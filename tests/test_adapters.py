"""Dataset adapters on small files written here: aggregation against direct computation, and bad inputs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image
from tests.conftest import adapter_settings

from iqs.core.config import conf_dir
from iqs.core.errors import DataError
from iqs.core.scale import gaussian_dist, std_to_common, to_common, votes_to_dist
from iqs.data.adapters import ADAPTERS, load_source
from iqs.data.table import COLUMNS, dist_matrix


def write_ava_txt(path: Path, counts: np.ndarray, ids: np.ndarray) -> None:
    rows = [
        " ".join(map(str, [i + 1, int(ids[i]), *counts[i].astype(int).tolist(), 0, 0, 1]))
        for i in range(len(ids))
    ]
    path.write_text("\n".join(rows) + "\n")


def ava_cfg(root: Path, **kw) -> dict:
    cfg = adapter_settings("ava") | dict(
        name="ava",
        adapter="ava",
        root=str(root),
        annotations="AVA.txt",
        images="images",
        native_range=[1, 10],
        check_images=False,
        group_file=None,
        test_list=None,
    )
    cfg.update(kw)
    return cfg


@pytest.fixture
def ava_root(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.choice(np.arange(1, 10**6), size=40, replace=False)
    counts = rng.integers(0, 30, size=(40, 10))
    counts[0, 0] += 1  # at least one vote everywhere
    counts[counts.sum(axis=1) == 0, 4] = 1
    write_ava_txt(tmp_path / "AVA.txt", counts, ids)
    return tmp_path, ids, counts


def test_ava_txt_matches_direct_computation(ava_root):
    root, ids, counts = ava_root
    src = load_source(ava_cfg(root))
    t = src.table
    assert list(t.columns) == COLUMNS
    assert t["image_id"].tolist() == [str(i) for i in ids]
    levels = np.arange(1, 11)
    n = counts.sum(axis=1)
    mean = counts @ levels / n
    std = np.sqrt(counts @ (levels**2) / n - mean**2)
    np.testing.assert_allclose(t["raw_score"], mean)
    np.testing.assert_allclose(t["score"], mean)  # AVA's scale is the common scale
    np.testing.assert_allclose(t["n_votes"], n)
    # population std of the individual votes, via numpy on the expanded vote list
    np.testing.assert_allclose(t["std"].iloc[3], np.repeat(levels, counts[3]).std())
    np.testing.assert_allclose(t["std"], std)
    np.testing.assert_allclose(dist_matrix(t), counts / n[:, None])
    assert t["path"].iloc[0] == f"images/{ids[0]}.jpg"
    assert t["group"].iloc[0] == f"ava:{ids[0]}"
    assert t["split"].isna().all()


def test_ava_official_test_list_and_csv_variant_agree(ava_root):
    root, ids, counts = ava_root
    (root / "lists").mkdir()
    (root / "lists" / "test.jpgl").write_text("\n".join(map(str, ids[:10])) + "\n123\n")  # 123: no votes
    csv = pd.DataFrame({"image_id": ids, **{f"score{k + 2}": counts[:, k] for k in range(10)}})
    csv["quality_eval"] = 1.0  # a model's output in the public CSVs: ignored
    csv.to_csv(root / "votes.txt", index=False)  # content decides the format, not the extension
    a = load_source(ava_cfg(root, test_list="lists/test.jpgl")).table
    b = load_source(ava_cfg(root, annotations="votes.txt", test_list="lists/test.jpgl")).table
    assert (a["split"].iloc[:10] == "test").all() and (a["split"].iloc[10:] == "trainval").all()
    pd.testing.assert_frame_equal(a, b)


def test_ava_zero_vote_rows_dropped_with_warning(ava_root, caplog):
    root, ids, counts = ava_root
    counts = counts.copy()
    counts[[2, 5]] = 0
    write_ava_txt(root / "AVA.txt", counts, ids)
    with caplog.at_level(logging.WARNING):
        t = load_source(ava_cfg(root)).table
    assert len(t) == len(ids) - 2 and str(ids[2]) not in set(t["image_id"])
    assert "dropped 2 image(s) without any vote" in caplog.text


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("7 1234 1 2 x 4 5 6 7 8 9 10 0 0 1", "row 3: column 'rating_3': not a number: 'x'"),
        ("7 1234 1 2 -3 4 5 6 7 8 9 10 0 0 1", "row 3: column 'rating_3': value outside the declared range"),
        ("7 1234 1 2 3.5 4 5 6 7 8 9 10 0 0 1", "row 3: column 'rating_3': not an integer"),
        ("7 1234 1 2 3 4 5 6 7 8 9 10 0 0 1 99", "line 3, saw 16"),
    ],
)
def test_ava_txt_bad_rows_named(tmp_path, line, needle):
    good = "1 11 0 1 2 3 4 5 4 3 2 1 0 0 1\n2 12 0 1 2 3 4 5 4 3 2 1 0 0 1\n"
    (tmp_path / "AVA.txt").write_text(good + line + "\n")
    with pytest.raises(DataError) as err:
        load_source(ava_cfg(tmp_path))
    assert "AVA.txt" in str(err.value) and needle in str(err.value)


def test_duplicate_ids_reported_with_rows(tmp_path):
    rows = [
        "1 11 0 1 2 3 4 5 4 3 2 1 0 0 1",
        "2 12 1 1 1 1 1 1 1 1 1 1 0 0 1",
        "3 11 1 1 1 1 1 1 1 1 1 1 0 0 1",
    ]
    (tmp_path / "AVA.txt").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"duplicate image ids: 1 id\(s\).*'11' at .*AVA.txt, row 1, .*row 3"):
        load_source(ava_cfg(tmp_path))


def write_eva_votes(path: Path, votes: pd.DataFrame) -> None:
    votes = votes.assign(user_id=[f"E{i}" for i in range(len(votes))], difficulty=2, visual=3)
    votes[["image_id", "user_id", "score", "difficulty", "visual"]].to_csv(path, sep="=", index=False)


def eva_cfg(root: Path, annotations="votes_filtered.csv") -> dict:
    return dict(
        **adapter_settings("eva"),
        name="eva",
        adapter="eva",
        root=str(root),
        annotations=annotations,
        images="images",
        native_range=[0, 10],
        check_images=False,
    )


def test_eva_votes_aggregate_per_image(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.choice([str(x) for x in rng.integers(1, 10**6, size=25)], size=400)
    votes = pd.DataFrame({"image_id": image, "score": rng.integers(0, 11, size=400)})
    write_eva_votes(tmp_path / "votes_filtered.csv", votes)
    t = load_source(eva_cfg(tmp_path)).table.set_index("image_id")
    g = votes.groupby("image_id")["score"]
    assert set(t.index) == set(g.groups)
    np.testing.assert_allclose(t.loc[g.mean().index, "raw_score"], g.mean())
    np.testing.assert_allclose(t.loc[g.std(ddof=0).index, "std"], std_to_common(g.std(ddof=0), 0, 10))
    np.testing.assert_allclose(t.loc[g.size().index, "n_votes"], g.size())
    np.testing.assert_allclose(t["score"], to_common(t["raw_score"].to_numpy(), 0, 10))
    first = g.get_group(t.index[0]).to_numpy()
    hist = np.bincount(first, minlength=11)[None, :]
    np.testing.assert_allclose(dist_matrix(t.iloc[:1]), votes_to_dist(hist, np.arange(11), 0, 10))
    assert (t["group"] == "ava:" + t.index).all() and t["split"].isna().all()


@pytest.mark.parametrize(
    ("score", "needle"), [("11", "value outside the declared range [0, 10]: 11"), ("6.5", "not an integer")]
)
def test_eva_bad_vote_rows_named(tmp_path, score, needle):
    path = tmp_path / "votes_filtered.csv"
    path.write_text("image_id=user_id=score=difficulty\n10=E1=5=2\n10=E2=6=2\n11=E3=" + score + "=2\n")
    with pytest.raises(DataError, match=re.escape(f"votes_filtered.csv, row 4: column 'score': {needle}")):
        load_source(eva_cfg(tmp_path))


def test_eva_json_histograms_summed_and_checked(tmp_path):
    a = [{"image_id": 10, "label": [0, 1, 2, 0, 0, 0, 0, 0, 0, 1], "score": (2 + 6 + 10) / 4}]
    b = [
        {"image_id": 10, "label": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0], "score": 1.0},
        {"image_id": 20, "label": [0, 0, 0, 0, 3, 0, 0, 0, 0, 0], "score": 5.0},
    ]
    pd.Series(a).to_json(tmp_path / "a.json", orient="records")
    pd.Series(b).to_json(tmp_path / "b.json", orient="records")
    t = load_source(eva_cfg(tmp_path, ["a.json", "b.json"])).table.set_index("image_id")
    assert list(t.index) == ["10", "20"]
    np.testing.assert_allclose(t.loc["10", ["raw_score", "n_votes"]], [(1 + 2 + 6 + 10) / 5, 5])
    b[1]["score"] = 4.0
    pd.Series(b).to_json(tmp_path / "b.json", orient="records")
    with pytest.raises(DataError, match=r"b.json, row 2: 'score' 4 is not the mean 5"):
        load_source(eva_cfg(tmp_path, ["a.json", "b.json"]))


def csv_cfg(root: Path, **kw) -> dict:
    cfg = adapter_settings("csv") | dict(
        name="mine", adapter="csv", root=str(root), annotations="labels.csv", images=".",
        native_range=[0, 100], default_std=1.0, check_images=True,
    )  # fmt: skip
    cfg.update(kw)
    return cfg


def test_csv_adapter_std_split_and_missing_images(tmp_path, caplog):
    (tmp_path / "photos").mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (8, 8), (120, 30, 200)).save(tmp_path / "photos" / name)
    (tmp_path / "labels.csv").write_text(
        "path,score,std,split\nphotos/a.jpg,50,10,train\nphotos/b.jpg,100,,\nphotos/c.jpg,0,5,test\nd.jpg,20,,val\n"
    )
    with caplog.at_level(logging.WARNING):
        src = load_source(csv_cfg(tmp_path))
    t = src.table
    assert src.missing == ["photos/c.jpg", "d.jpg"]
    assert "2 of 4 images missing" in caplog.text
    assert (
        t["image_id"].tolist()
        == t["path"].tolist()
        == ["photos/a.jpg", "photos/b.jpg", "photos/c.jpg", "d.jpg"]
    )
    assert t["split"].isna().tolist() == [False, True, False, False]
    assert t["split"].dropna().tolist() == ["train", "test", "val"]
    np.testing.assert_allclose(t["score"], to_common(np.array([50, 100, 0, 20]), 0, 100))
    np.testing.assert_allclose(dist_matrix(t.iloc[:1]), gaussian_dist(t["score"].iloc[:1], [10 * 9 / 100]))
    np.testing.assert_allclose(dist_matrix(t.iloc[1:2]), gaussian_dist(t["score"].iloc[1:2], [1.0]))
    assert t["group"].iloc[0] == "mine:photos/a.jpg"


def test_missing_image_folder_reported_once(tmp_path, caplog):
    (tmp_path / "labels.csv").write_text("path,score\nnowhere/a.jpg,5\nnowhere/b.jpg,6\n")
    with caplog.at_level(logging.WARNING):
        src = load_source(csv_cfg(tmp_path, images="nowhere"))
    assert len(src.missing) == 2
    assert "does not exist: all 2 images are missing" in caplog.text and "a.jpg" not in caplog.text


@pytest.mark.parametrize("bad", ["../x.jpg", "a/../../x.jpg", "/etc/passwd"])
def test_csv_path_escaping_root_rejected(tmp_path, bad):
    (tmp_path / "labels.csv").write_text(f"path,score\nok.jpg,5\n{bad},6\n")
    with pytest.raises(DataError, match=r"labels.csv, row 3: image path .* escapes the dataset root"):
        load_source(csv_cfg(tmp_path))


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("path,score\na.jpg,5\nb.jpg,abc\n", r"row 3: column 'score': not a number: 'abc'"),
        ("path,score\na.jpg,5\nb.jpg,101\n", r"row 3: column 'score': value outside the declared range \[0, 100\]: 101"),
        ("path,score\n\na.jpg,5\nb.jpg,\n", r"row 4: column 'score': not a number"),  # blank line still counted
        ("path,score,split\na.jpg,5,training\n", r"row 2: column 'split': unknown value 'training'"),
        ("file,mos\na.jpg,5\n", r"missing column\(s\) \['path', 'score'\]. Expected columns: \['path', 'score'\]; found: \['file', 'mos'\]"),
        ("", "the file is empty"),
        ("path,score\n", "has a header but no data rows"),
    ],
)  # fmt: skip
def test_csv_bad_inputs_named(tmp_path, body, needle):
    (tmp_path / "labels.csv").write_text(body)
    with pytest.raises(DataError, match=needle) as err:
        load_source(csv_cfg(tmp_path))
    assert str(tmp_path / "labels.csv") in str(err.value)


def test_csv_native_range_is_required(tmp_path):
    (tmp_path / "labels.csv").write_text("path,score\na.jpg,5\n")
    cfg = OmegaConf.create({"dataset": csv_cfg(tmp_path, native_range="???")})
    with pytest.raises(DataError, match=r"dataset.native_range is required"):
        load_source(cfg.dataset)


def test_missing_annotation_names_path_and_config_key(tmp_path):
    cfg = OmegaConf.create({"data": {"sources": {"ava": ava_cfg(tmp_path / "AVA")}}})
    with pytest.raises(DataError) as err:
        load_source(cfg.data.sources.ava)
    msg = str(err.value)
    assert str(tmp_path / "AVA" / "AVA.txt") in msg and "does not exist" in msg
    assert "data.sources.ava.root=" in msg and "data.sources.ava.annotations=" in msg


def test_group_file_overrides_groups(ava_root):
    root, ids, _ = ava_root
    pd.DataFrame({"image_id": ids[:3], "group": ["ref:1", "ref:1", "ref:2"]}).to_csv(
        root / "groups.csv", index=False
    )
    t = load_source(ava_cfg(root, group_file="groups.csv")).table
    assert t["group"].iloc[:3].tolist() == ["ref:1", "ref:1", "ref:2"]
    assert t["group"].iloc[3] == f"ava:{ids[3]}"
    pd.DataFrame({"image_id": [ids[0], 999999999], "group": ["g", "h"]}).to_csv(
        root / "groups.csv", index=False
    )
    with pytest.raises(
        DataError, match=r"groups.csv, row 3: image id not in the dataset's annotations: '999999999'"
    ):
        load_source(ava_cfg(root, group_file="groups.csv"))


def test_unknown_adapter_gets_a_hint(tmp_path):
    with pytest.raises(DataError, match="Did you mean 'koniq10k'"):
        load_source(dict(ava_cfg(tmp_path), adapter="koniq"))


def koniq_csv(path: Path, mos: list[float], sets: list[str] | None = None) -> None:
    n = len(mos)
    df = pd.DataFrame({"image_name": [f"{i}.jpg" for i in range(n)]})
    for k in range(1, 6):
        df[f"c{k}"] = np.arange(n) + k
    df["c_total"] = df[[f"c{k}" for k in range(1, 6)]].sum(axis=1)
    df["MOS"], df["SD"] = mos, 0.5
    if sets is not None:
        df["set"] = sets
    df.to_csv(path, index=False)


def test_koniq_declared_scale_split_and_votes(tmp_path):
    koniq_csv(tmp_path / "k.csv", [1.0, 3.0, 5.0], ["training", "validation", "test"])
    cfg = dict(name="koniq10k", adapter="koniq10k", root=str(tmp_path), annotations="k.csv",
               images="1024x768", native_range=[1, 5], check_images=False,
               **{**adapter_settings("koniq10k"), "split_file": None})  # fmt: skip
    t = load_source(cfg).table
    np.testing.assert_allclose(t["score"], [1.0, 5.5, 10.0])
    np.testing.assert_allclose(t["std"], 0.5 * 9 / 4)
    assert t["split"].tolist() == ["train", "val", "test"]
    counts = np.arange(3)[:, None] + np.arange(1, 6)[None, :]
    np.testing.assert_allclose(dist_matrix(t), votes_to_dist(counts, [1, 2, 3, 4, 5], 1, 5))
    cfg["native_range"] = [1, 4]
    with pytest.raises(
        DataError, match=r"k.csv, row 4: column 'MOS': value outside the declared range \[1, 4\]: 5"
    ):
        load_source(cfg)


@pytest.mark.parametrize("name", ADAPTERS.names())
def test_every_adapter_has_a_config(name):
    path = conf_dir() / "dataset" / f"{name}.yaml"
    assert path.is_file(), f"adapter '{name}' has no conf/dataset/{name}.yaml"
    paths = OmegaConf.load(conf_dir() / "paths" / "default.yaml")
    cfg = OmegaConf.create({"paths": paths, "dataset": OmegaConf.load(path)})
    ds = cfg.dataset
    assert ds.adapter == name and ds.name
    for key in ("root", "annotations", "images", "native_range", "check_images", "group_file"):
        assert key in list(ds.keys()), f"{path} lacks '{key}'"
    assert ds.check_images is True and ds.group_file is None
    assert str(ds.root).startswith(str(cfg.paths.data_dir))
    if name != "csv":
        lo, hi = ds.native_range
        assert lo < hi


@pytest.mark.parametrize("key", ["score_column", "vote_range", "split_column", "split_file", "group_prefix"])
def test_adapter_settings_come_from_the_config_not_code_defaults(tmp_path, key):
    """An adapter has no fallback of its own for a setting: the dataset yaml states it, or the error names it."""
    koniq_csv(tmp_path / "k.csv", [1.0, 3.0, 5.0], ["training", "validation", "test"])
    cfg = dict(name="koniq10k", adapter="koniq10k", root=str(tmp_path), annotations="k.csv",
               images="1024x768", native_range=[1, 5], check_images=False,
               **{**adapter_settings("koniq10k"), "split_file": None})  # fmt: skip
    load_source(cfg)
    del cfg[key]
    with pytest.raises(DataError, match=rf"config key dataset\.{key} .*(missing|required)"):
        load_source(cfg)
