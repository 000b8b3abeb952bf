from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chi2_contingency
from sklearn.metrics import roc_auc_score

from iqs.data.audit import (
    audit_metrics,
    cached_embeddings,
    composition,
    identity_probe,
    log_run_audit,
    within_source,
)


def labelled(counts: dict[str, tuple[int, int, int]], split: str = "train") -> pd.DataFrame:
    """Rows per source and class (bad, normal, good)."""
    parts = []
    for s, per_class in counts.items():
        for c, n in enumerate(per_class):
            parts.append(pd.DataFrame({"dataset": s, "label": np.full(n, c), "split": split}))
    return pd.concat(parts, ignore_index=True)


def test_composition_matches_pandas_and_scipy() -> None:
    counts = {"ava": (300, 900, 200), "koniq": (400, 50, 60), "spaq": (100, 100, 100)}
    df = pd.concat([labelled(counts), labelled({"ava": (0, 0, 999)}, split="test")], ignore_index=True)
    comp = composition(df)  # the train split only: the test rows must not count
    shares = pd.crosstab(
        df.loc[df.split == "train", "dataset"], df.loc[df.split == "train", "label"], normalize="columns"
    )
    for c, name in enumerate(("bad", "normal", "good")):
        for s in counts:
            assert comp["share_of_class"][name][s] == pytest.approx(shares.loc[s, c])
    obs = np.array(list(counts.values()))
    chi2 = chi2_contingency(obs, correction=False)[0]
    assert comp["cramers_v"] == pytest.approx(np.sqrt(chi2 / (obs.sum() * (min(obs.shape) - 1))))
    # koniq: 50% of its rows are bad... it supplies 400/800 = 50% of bad, not "most"; ava supplies
    # 900/1050 of normal at 1400/2210 of all rows
    assert len(comp["warnings"]) == 1 and "ava supplies 86% of the normal class" in comp["warnings"][0]


def test_composition_warns_on_a_dominant_or_single_class_source_only() -> None:
    # seed_combined's shape: koniq and spaq give bad images only; koniq alone gives most of "bad"
    comp = composition(labelled({"ava": (100, 500, 400), "koniq": (700, 0, 0), "spaq": (200, 0, 0)}))
    text = " ".join(comp["warnings"])
    assert "koniq supplies 70% of the bad class" in text
    assert "every koniq row is bad" in text and "every spaq row is bad" in text
    # a source that is 90% of the mixture supplies 90% of every class: no association, no warning
    comp = composition(labelled({"ava": (900, 900, 900), "koniq": (100, 100, 100)}))
    assert comp["warnings"] == [] and comp["cramers_v"] == pytest.approx(0.0, abs=1e-12)
    one = composition(labelled({"ava": (5, 5, 5)}))
    assert one["cramers_v"] is None and one["warnings"] == []


def _grouped_features(
    separation: float, seed: int = 0, dim: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 sources x 12 groups x 20 rows; every group has its own random offset (like a photograph)."""
    rng = np.random.default_rng(seed)
    x, src, grp = [], [], []
    for s in range(3):
        for g in range(12):
            centre = rng.normal(0, 3, dim)  # content: groups differ a lot
            centre[0] = separation * s  # the source's own signature on one axis, the same for its groups
            x.append(centre + rng.normal(0, 0.5, (20, dim)))
            src += [f"s{s}"] * 20
            grp += [f"s{s}-g{g}"] * 20
    return np.vstack(x), np.array(src), np.array(grp)


def test_identity_probe_finds_a_source_signature() -> None:
    x, src, grp = _grouped_features(separation=6.0)
    out = identity_probe(x, src, grp)
    assert out["chance"] == pytest.approx(1 / 3) and out["balanced_accuracy"] > 0.9
    assert out["folds"] == 5 and out["rows"] == len(x)


def test_identity_probe_is_grouped_so_content_does_not_leak() -> None:
    # no source signature, but each group sits in one source: ungrouped folds would recognise the
    # group's content and so the source; grouped folds must stay near chance
    x, src, grp = _grouped_features(separation=0.0, dim=64)  # enough dimensions to memorise 36 groups
    out = identity_probe(x, src, grp, seed=1)
    assert out["balanced_accuracy"] < 0.6
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, cross_val_predict

    leaky = cross_val_predict(
        LogisticRegression(max_iter=2000), x, src, cv=KFold(5, shuffle=True, random_state=0)
    )
    assert (leaky == src).mean() > 0.8  # what the grouping prevents
    assert "skipped" in identity_probe(x, np.full(len(x), "one"), grp)


def _predictions(pred_score: np.ndarray, df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(pred_score=pred_score, pred_class=np.digitize(pred_score, [5.0, 6.0], right=True))


def test_within_source_tells_ranking_from_identity() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "dataset": np.repeat(["ava", "koniq"], 400),
            "label": np.r_[rng.choice(3, 400, p=[0.1, 0.3, 0.6]), rng.choice(3, 400, p=[0.6, 0.3, 0.1])],
        }
    )
    # a shortcut model: one score per source, nothing within
    shortcut = within_source(_predictions(np.where(df["dataset"] == "ava", 7.0, 4.0), df))
    assert shortcut["sources"]["ava"]["good_vs_bad_auc"] == pytest.approx(0.5)
    assert shortcut["pooled"]["good_vs_bad_auc"] == pytest.approx(shortcut["pooled"]["source_only_auc"])
    assert shortcut["pooled"]["good_vs_bad_auc"] > 0.8
    # a model that ranks inside each source
    pred = 4.5 + df["label"] + rng.normal(0, 0.3, len(df))  # bad ~4.5, normal ~5.5, good ~6.5
    ranker = within_source(_predictions(pred, df))
    for s in ("ava", "koniq"):
        part = (df["dataset"] == s) & (df["label"] != 1)
        expected = roc_auc_score(df.loc[part, "label"] == 2, pred[part])
        assert ranker["sources"][s]["good_vs_bad_auc"] == pytest.approx(expected) and expected > 0.99
        assert ranker["sources"][s]["balanced_accuracy"] > 0.8
    with pytest.raises(ValueError, match="pred_score"):
        within_source(df)


def test_cached_embeddings_and_run_logging(tmp_path) -> None:
    x, src, grp = _grouped_features(separation=6.0)
    folder = tmp_path / "features"
    folder.mkdir()
    torch.save(
        {"key": {"table_fingerprint": "abc"}, "eval": torch.tensor(x, dtype=torch.float16)}, folder / "k1.pt"
    )
    torch.save({"key": {"table_fingerprint": "zzz"}, "eval": torch.zeros(3, 2)}, folder / "k2.pt")
    (folder / "broken.pt").write_bytes(b"not a torch file")
    found = cached_embeddings(tmp_path, "abc")
    assert [p.name for p, _, _ in found] == ["k1.pt"] and found[0][2].shape == x.shape

    logged: dict = {}
    run = SimpleNamespace(log_metrics=lambda m: logged.update(m), log_text=lambda t, n: logged.update({n: t}))
    labels = np.random.default_rng(0).choice(3, len(x))
    table = pd.DataFrame({"dataset": src, "group": grp, "label": labels, "split": "train"})
    dm = SimpleNamespace(table=table, features=SimpleNamespace(eval=torch.tensor(x), path=folder / "k1.pt"))
    preds = _predictions(3.0 + 2.0 * labels, table)
    report = log_run_audit(run, dm, preds)
    assert logged["audit/identity/balanced_accuracy"] == report["identity_probe"]["balanced_accuracy"] > 0.9
    assert logged["audit/identity/chance"] == pytest.approx(1 / 3)
    assert logged["audit/within/s0/good_vs_bad_auc"] == pytest.approx(1.0)
    assert "audit/composition/cramers_v" in logged and set(audit_metrics(report)) <= set(logged)
    stored = json.loads(logged["audit/audit.json"])
    assert "predictions" not in stored["identity_probe"] and stored["composition"]["split"] == "train"
