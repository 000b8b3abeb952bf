from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import iqs.data.adapters as adapters
from iqs.core.config import conf_dir
from iqs.core.errors import DataError
from iqs.core.scale import to_common
from iqs.data.adapters.base import SourceData
from iqs.data.stats import main
from iqs.data.table import make_table

DEMO = ("demo_ava", "demo_koniq", "demo_spaq")
RANGES = {"demo_ava": (1.0, 10.0), "demo_koniq": (1.0, 5.0), "demo_spaq": (0.0, 100.0), "ava": (1.0, 10.0)}


def synthetic(name: str, n: int, seed: int) -> pd.DataFrame:
    lo, hi = RANGES[name]
    raw = np.random.default_rng(seed).uniform(lo, hi, n)
    ids = [f"{name}{i}" for i in range(n)]
    return make_table(
        name, ids, [f"{i}.jpg" for i in ids], raw, to_common(raw, lo, hi), np.full((n, 10), 0.1)
    )


@pytest.fixture
def conf(tmp_path, monkeypatch) -> Path:
    """A copy of conf/ with stand-in dataset configs where the real ones are not written yet."""
    dst = tmp_path / "conf"
    shutil.copytree(conf_dir(), dst)
    for name in (*DEMO, "ava"):
        path = dst / "dataset" / f"{name}.yaml"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            lo, hi = RANGES[name]
            path.write_text(
                f"name: {name}\nadapter: fake\nroot: /nowhere\nannotations: a.csv\nnative_range: [{lo}, {hi}]\n"
            )
    monkeypatch.setenv("IQS_CONF_DIR", str(dst))
    return dst


@pytest.fixture
def tables(monkeypatch, tmp_path) -> dict[str, pd.DataFrame]:
    tables = {name: synthetic(name, 300 + 100 * i, i) for i, name in enumerate((*DEMO, "ava"))}

    def load_source(cfg):
        name = cfg["name"]
        if name not in tables:
            raise DataError("cannot parse", file=f"/nowhere/{name}.csv", row=3)
        missing = [f"{name}_gone.jpg"] if name == "demo_spaq" else []
        return SourceData(name, tmp_path, tables[name].copy(), missing, RANGES[name])

    monkeypatch.setattr(adapters, "load_source", load_source, raising=False)
    return tables


def run_json(capsys, argv) -> dict:
    assert main([*argv, "format=json"]) == 0
    return json.loads(capsys.readouterr().out)  # stdout is pure JSON


def test_json_matches_pandas(conf, tables, capsys) -> None:
    stats = run_json(capsys, ["data=demo", "data.demo_dir=null", "thresholds=t4.5_6.5"])
    assert set(stats) == {*DEMO, "all"}
    for name in DEMO:
        s, df = stats[name], tables[name]
        assert s["n"] == len(df)
        assert s["raw_mean"] == pytest.approx(df["raw_score"].mean())
        assert s["raw_sd"] == pytest.approx(df["raw_score"].std(ddof=1))
        assert (s["raw_min"], s["raw_max"]) == pytest.approx((df["raw_score"].min(), df["raw_score"].max()))
        assert s["score_mean"] == pytest.approx(df["score"].mean())
        assert s["score_sd"] == pytest.approx(np.std(df["score"], ddof=1))
        counts = np.bincount(np.searchsorted([4.5, 6.5], df["score"], side="left"), minlength=3)
        assert s["class_counts"] == dict(zip(("bad", "normal", "good"), counts.tolist(), strict=True))
        assert sum(s["split_counts"].values()) == len(df) and min(s["split_counts"].values()) > 0
        assert s["removed"] == 0 and s["thresholds"] == [4.5, 6.5]
        assert s["native_range"] == list(RANGES[name])
    assert stats["demo_spaq"]["missing"] == 1 and stats["all"]["missing"] == 1
    everything = pd.concat([tables[n] for n in DEMO])
    assert stats["all"]["n"] == len(everything)
    assert stats["all"]["raw_mean"] is None and stats["all"]["raw_sd"] is None
    assert stats["all"]["score_mean"] == pytest.approx(everything["score"].mean())
    assert stats["all"]["score_max"] == pytest.approx(everything["score"].max())


def test_single_dataset_mode_and_table_output(conf, tables, capsys) -> None:
    stats = run_json(capsys, ["dataset=ava", "dataset.root=/elsewhere", "test_fraction=0.3", "seed=1"])
    assert set(stats) == {"ava", "all"} and stats["ava"]["n"] == len(tables["ava"])
    assert stats["ava"]["split_counts"]["test"] / len(tables["ava"]) == pytest.approx(0.3, abs=0.08)
    assert main(["data=demo", "data.demo_dir=null", "thresholds=t5_6"]) == 0
    out = capsys.readouterr().out
    for word in (*DEMO, "all", "bad", "normal", "good", "fingerprint", "demo_spaq: 1 images missing"):
        assert word in out


@pytest.mark.slow
def test_histograms_are_written(conf, tables, tmp_path, capsys) -> None:
    folder = tmp_path / "plots"
    assert main(["data=demo", "data.demo_dir=null", f"histogram={folder}"]) == 0
    for name in (*DEMO, "all"):
        png = folder / f"{name}_scores.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_data_errors_exit_2_without_traceback(conf, tables, capsys) -> None:
    tables.pop("demo_koniq")
    assert main(["data=demo", "data.demo_dir=null"]) == 2
    err = capsys.readouterr().err
    assert "/nowhere/demo_koniq.csv, row 3: cannot parse" in err and "Traceback" not in err


def test_config_errors_exit_2(conf, tables, capsys) -> None:
    assert main(["data=demo", "data.demo_dir=null", "+data.sources.demo_ava.keep_class=[0]"]) == 2
    assert "Did you mean 'keep_classes'" in capsys.readouterr().err
    assert main(["data=demo", "thresholds=nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["data=demo", "data.demo_dir=null", "format=xml"]) == 2


@pytest.mark.realdata
def test_real_ava_test_list(realdata, conf, capsys, monkeypatch, tmp_path) -> None:
    """AVA's official test votes as a CSV source: labels over real AVA means (most in (5, 6) are normal)."""
    monkeypatch.undo()  # the real adapters
    monkeypatch.setenv("IQS_CONF_DIR", str(conf))
    csv = realdata / "ava" / "ava_generic_test_votes.csv"
    df = pd.read_csv(csv)
    pytest.importorskip("iqs.data.adapters.generic_csv")
    (tmp_path / "ava.csv").write_text(
        "image_id,path,score\n"
        + "".join(f"{i},{i}.jpg,{q}\n" for i, q in zip(df["image_id"], df["quality"], strict=True))
    )
    argv = [
        "dataset=csv",
        f"dataset.root={tmp_path}",
        "dataset.annotations=ava.csv",
        "dataset.native_range=[1,10]",
        "dataset.check_images=false",
        "dataset.name=ava_test",
    ]
    if main([*argv, "format=json"]) != 0:
        pytest.skip(f"csv adapter takes other keys: {capsys.readouterr().err}")
    stats = json.loads(capsys.readouterr().out)["ava_test"]
    assert stats["n"] == len(df)
    expected = np.bincount(np.searchsorted([5.0, 6.0], df["quality"], side="left"), minlength=3)
    assert list(stats["class_counts"].values()) == expected.tolist()
    assert stats["score_mean"] == pytest.approx(df["quality"].mean())


@pytest.mark.slow
def test_shortcut_audit_in_stats(conf, tables, tmp_path, capsys) -> None:
    import torch

    base = ["data=demo", "data.demo_dir=null", f"paths.cache_dir={tmp_path / 'cache'}"]
    stats = run_json(capsys, base)
    audit, fp = stats["all"]["audit"], stats["all"]["images_fingerprint"]
    train = pd.concat([tables[n] for n in DEMO])  # every fake row is drawn; the audit uses train rows
    n_train = sum(stats[n]["split_counts"]["train"] for n in DEMO)
    assert sum(sum(c.values()) for c in audit["composition"]["counts"].values()) == n_train < len(train)
    assert 0 <= audit["composition"]["cramers_v"] <= 1 and "identity_probe" not in audit
    # the probe needs a run's feature cache of this very table
    assert main([*base, "probe=true"]) == 2
    assert "no feature cache" in capsys.readouterr().err
    n = stats["all"]["n"]
    rows = np.repeat(np.arange(3), [stats[d]["n"] for d in DEMO])  # table order: sources as configured
    x = np.random.default_rng(0).normal(size=(n, 4)) + 3.0 * rows[:, None]  # sources far apart
    folder = tmp_path / "cache" / "features"
    folder.mkdir(parents=True)
    torch.save(
        {"key": {"table_fingerprint": fp, "backbone": "b", "pool": "avg"}, "eval": torch.tensor(x)},
        folder / "e.pt",
    )
    probe = run_json(capsys, [*base, "probe=true"])["all"]["audit"]["identity_probe"]
    assert probe["balanced_accuracy"] > 0.95 and probe["chance"] == pytest.approx(1 / 3)
    preds = pd.DataFrame({"dataset": "demo_ava", "label": [0, 2, 1, 2], "pred_class": [0, 2, 2, 1]})
    preds["pred_score"] = [3.0, 8.0, 6.5, 6.0]
    preds.to_csv(tmp_path / "p.csv", index=False)
    assert main([*base, f"probe={folder / 'e.pt'}", f"predictions={tmp_path / 'p.csv'}"]) == 0
    out = capsys.readouterr().out
    for words in ("Shortcut audit", "Cramér's V", "Dataset-identity probe", "Within-source", "source only"):
        assert words in out
