"""Learned decision cuts: the exact search against sklearn by brute force, known optima, no test leakage."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from iqs.core.scale import assign_labels
from iqs.models import build_quality_model
from iqs.train.decision_cuts import (
    ALL,
    CutsConfig,
    bake_into_checkpoint,
    cuts_for_proportions,
    search_macro_f1,
    tune_and_evaluate,
    tune_cuts,
    tuned_metrics,
)


def brute_force(score: np.ndarray, label: np.ndarray) -> float:
    """The best sklearn macro-F1 over every pair of candidate cuts (midpoints and beyond-the-range edges)."""
    u = np.unique(score)
    cands = np.concatenate([[u[0] - 1], (u[:-1] + u[1:]) / 2, [u[-1] + 1]])
    return max(
        f1_score(label, assign_labels(score, a, b), average="macro", zero_division=0)
        for a, b in itertools.combinations(cands, 2)
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.slow
def test_search_matches_sklearn_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 40
    latent = rng.normal(size=n)
    # noisy, rounded scores: ties and overlapping classes
    score = np.round(latent + rng.normal(scale=0.7, size=n), 1)
    label = assign_labels(latent, -0.5, 0.6)
    if seed == 3:
        label[label == 0] = 1  # a class absent from the truth
    t1, t2, best = search_macro_f1(score, label)
    assert best == pytest.approx(brute_force(score, label), abs=1e-12)
    assert f1_score(label, assign_labels(score, t1, t2), average="macro", zero_division=0) == pytest.approx(
        best
    )


def test_search_finds_the_known_separating_cuts() -> None:
    rng = np.random.default_rng(0)
    # class c lives on [2c, 2c + 1]: the only perfect cuts lie in the gaps, the midpoints of the gaps' edges
    label = rng.integers(0, 3, 300)
    score = 2 * label + rng.uniform(0, 1, 300)
    t1, t2, f1 = search_macro_f1(score, label)
    assert f1 == 1.0
    assert t1 == pytest.approx((score[label == 0].max() + score[label == 1].min()) / 2)
    assert t2 == pytest.approx((score[label == 1].max() + score[label == 2].min()) / 2)


def test_search_beats_label_thresholds_on_a_shrunk_regression() -> None:
    """A regression shrunk towards the mean (pred = 5.5 + 0.4 (s - 5.5)) is best cut at the shrunk
    thresholds 5.5 + 0.4 (t - 5.5), not at the labels' own 5 and 6."""
    rng = np.random.default_rng(1)
    true = rng.normal(5.5, 1.0, 4000)
    label = assign_labels(true, 5.0, 6.0)
    pred = 5.5 + 0.4 * (true - 5.5)
    t1, t2, f1 = search_macro_f1(pred, label)
    assert f1 == 1.0
    assert t1 == pytest.approx(5.3, abs=2e-3) and t2 == pytest.approx(5.7, abs=2e-3)
    at_labels = f1_score(label, assign_labels(pred, 5.0, 6.0), average="macro")
    assert at_labels < 0.8


def test_candidate_cap_keeps_the_search_close() -> None:
    rng = np.random.default_rng(2)
    latent = rng.normal(size=3000)
    score, label = latent + rng.normal(scale=0.5, size=3000), assign_labels(latent, -0.4, 0.5)
    exact = search_macro_f1(score, label)[2]
    capped = search_macro_f1(score, label, max_candidates=300)[2]
    assert capped <= exact and capped > exact - 0.01


def test_proportion_cuts_hit_the_target_shares() -> None:
    score = np.random.default_rng(3).normal(size=1000)
    t1, t2 = cuts_for_proportions(score, [0.2, 0.5, 0.3])
    shares = np.bincount(assign_labels(score, t1, t2), minlength=3) / len(score)
    np.testing.assert_allclose(shares, [0.2, 0.5, 0.3], atol=1e-3)


def frame(rng: np.random.Generator, n: int, offsets: dict[str, float]) -> pd.DataFrame:
    parts = []
    for ds, off in offsets.items():
        label = rng.integers(0, 3, n)
        parts.append(
            pd.DataFrame({"dataset": ds, "label": label, "pred_score": off + label + rng.uniform(0, 0.9, n)})
        )
    return pd.concat(parts, ignore_index=True)


def test_per_source_cuts_follow_each_sources_offset() -> None:
    val = frame(np.random.default_rng(4), 200, {"a": 0.0, "b": 0.5})
    cfg = CutsConfig.from_cfg({"per_source": True})
    cuts = tune_cuts(val, cfg)
    assert set(cuts) == {ALL, "a", "b"}
    assert 0.9 < cuts["a"][0] < 1.0 and 1.9 < cuts["a"][1] < 2.0
    assert 1.4 < cuts["b"][0] < 1.5 and 2.4 < cuts["b"][1] < 2.5
    test = frame(np.random.default_rng(5), 200, {"a": 0.0, "b": 0.5})
    per_source = tuned_metrics("test", test, cuts)
    pooled = tuned_metrics("test", test, {ALL: cuts[ALL]})
    assert per_source["test/all/macro_f1_tuned"] == 1.0 > pooled["test/all/macro_f1_tuned"]


def test_config_errors_are_explicit() -> None:
    with pytest.raises(KeyError, match="per_sorce"):
        CutsConfig.from_cfg({"per_sorce": True})
    with pytest.raises(ValueError, match="summing to 1"):
        CutsConfig.from_cfg({"objective": "target", "target": [0.2, 0.2, 0.2]})
    with pytest.raises(ValueError, match="objective"):
        CutsConfig.from_cfg({"objective": "f1"})


class _Model(torch.nn.Module):
    """forward_head: the score is the first feature (what a trained head would predict)."""

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"score": features[:, 0]}


class _Data:
    def __init__(self, table: pd.DataFrame, features: torch.Tensor) -> None:
        self.table, self.features = table, features

    def val_dataloader(self):
        rows = np.flatnonzero((self.table["split"] == "val").to_numpy())
        for chunk in np.array_split(rows, 3):
            yield {"features": self.features[chunk], "row": torch.from_numpy(chunk)}


def test_tuned_cuts_never_see_test_labels(tmp_path) -> None:
    rng = np.random.default_rng(6)
    n = 600
    latent = rng.normal(size=n)
    table = pd.DataFrame(
        {
            "dataset": rng.choice(["a", "b"], n),
            "split": rng.choice(["train", "val", "test"], n),
            "label": assign_labels(latent, -0.4, 0.5),
        }
    )
    pred = latent + rng.normal(scale=0.4, size=n)
    data = _Data(table, torch.from_numpy(np.stack([pred, rng.normal(size=n)], 1)))
    test_rows = np.flatnonzero((table["split"] == "test").to_numpy())
    predictions = table.iloc[test_rows][["dataset", "label"]].assign(pred_score=pred[test_rows])
    cfg = CutsConfig.from_cfg({"per_source": True})
    cuts, metrics = tune_and_evaluate(cfg, _Model(), data, predictions.copy())
    pooled = tuned_metrics("test", predictions, {ALL: cuts[ALL]})
    assert metrics["test/all/macro_f1_tuned_pooled"] == pooled["test/all/macro_f1_tuned"]

    shuffled = table.copy()
    shuffled.loc[test_rows, "label"] = rng.permutation(table.loc[test_rows, "label"].to_numpy())
    permuted = predictions.assign(label=shuffled.loc[test_rows, "label"].to_numpy())
    cuts2, metrics2 = tune_and_evaluate(cfg, _Model(), _Data(shuffled, data.features), permuted)
    assert cuts2 == cuts
    assert metrics2["val/all/macro_f1_tuned"] == metrics["val/all/macro_f1_tuned"]
    assert metrics2["test/all/macro_f1_tuned"] < metrics["test/all/macro_f1_tuned"] - 0.2
    # ... while changing the validation labels does move them
    val_rows = np.flatnonzero((table["split"] == "val").to_numpy())
    shuffled.loc[val_rows, "label"] = rng.permutation(table.loc[val_rows, "label"].to_numpy())
    cuts3, _ = tune_and_evaluate(cfg, _Model(), _Data(shuffled, data.features), predictions.copy())
    assert cuts3 != cuts


@pytest.mark.slow
def test_baked_cuts_class_every_score_and_survive_the_meta_round_trip(tmp_path) -> None:
    from iqs.models.checkpoints import load_checkpoint

    cfg = {
        "backbone": {"name": "resnet50", "weights": "none"},
        "head": {"name": "regression"},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    model = build_quality_model(cfg, pretrained=False).eval()
    path = tmp_path / "best.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "iqs_meta": dict(model.meta)}, path)
    bake_into_checkpoint(path, (5.3, 5.55))
    loaded = load_checkpoint(path)[0]
    assert loaded.meta["decision_cuts"] == [5.3, 5.55] and loaded.decision_cuts == (5.3, 5.55)
    x = torch.randn(500, model.meta["num_features"])
    with torch.no_grad():
        torch.nn.init.normal_(loaded.head.mlp[-1].weight, std=0.05)
        out = loaded.forward_head(x)
    score = out["score"].numpy()
    assert set(assign_labels(score, 5.3, 5.55).tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(loaded.predict(out)["label"].numpy(), assign_labels(score, 5.3, 5.55))
    assert build_quality_model(loaded.meta).decision_cuts == (5.3, 5.55)


def baked_regression_checkpoint(blobs: np.ndarray, tmp_path: Path) -> tuple[np.ndarray, tuple, Path]:
    """A random-weight regression model's scores on digiKam blobs, cuts at their 30%/70% quantiles, and its
    checkpoint (tmp_path/best.ckpt) with those cuts baked in. The backbone sees 96 px: the cuts are the head's,
    and every OpenCV release runs the net on each photo."""
    from iqs.core.preprocess import DigikamToBackbone
    from test_export import make_model, save_checkpoint

    model = make_model("regression", size=96)
    with torch.no_grad():
        score = model(DigikamToBackbone.from_meta(model.meta)(torch.from_numpy(blobs)))["score"].numpy()
    cuts = tuple(float(c) for c in np.quantile(score, [0.3, 0.7]))
    ckpt = save_checkpoint(model, tmp_path / "best.ckpt")
    bake_into_checkpoint(ckpt, cuts)
    return score, cuts, ckpt


@pytest.mark.slow
def test_export_uses_the_baked_cuts(tmp_path) -> None:
    """A checkpoint with baked cuts exports a .pb whose argmax (readNetFromTensorflow, OpenCV 4.10) is the
    tuned class."""
    from iqs.core.preprocess import digikam_blob
    from iqs.deploy.compat.opencv_matrix import run_on_blobs
    from iqs.deploy.export import exporter as export
    from test_export import demo_photos

    blobs = np.concatenate([digikam_blob(p) for p in demo_photos(n=12)])
    score, cuts, ckpt = baked_regression_checkpoint(blobs, tmp_path)
    verify = "verify_opencv=[4.10.0.84]"  # checked on export in the one release the test runs it in
    assert export.main([f"checkpoint={ckpt}", f"out_dir={tmp_path / 'exports'}", verify]) == 0
    (run,) = run_on_blobs(tmp_path / "exports" / "best.digikam.pb", blobs, ("4.10.0.84",)).values()
    got = run.classes
    expected = assign_labels(score, *cuts)
    assert set(expected.tolist()) == {0, 1, 2}
    # the exported graph runs in float32, like `score` here: the classes agree exactly
    np.testing.assert_array_equal(got, expected)
    assert (
        "Decision cuts tuned on the validation split" in (tmp_path / "exports" / "MODEL_CARD.md").read_text()
    )


@pytest.mark.slow
@pytest.mark.compat
def test_baked_cuts_hold_in_every_opencv_release(tmp_path) -> None:
    """The OpenCV matrix on an export with baked cuts: every release (the .pb digiKam loads and the ONNX) gives
    onnxruntime's classes on its own pixels, and those are the tuned classes of the PyTorch model."""
    import io

    from rich.console import Console

    from iqs.deploy.compat.command import (
        check_model,
        compat_photos,
        read_blobs,
        torch_reference,
        write_photos,
    )
    from iqs.models.checkpoints import load_checkpoint

    images = write_photos(compat_photos(12), tmp_path / "photos")
    blobs = read_blobs(images)
    score, cuts, ckpt = baked_regression_checkpoint(blobs, tmp_path)
    baked, _ = load_checkpoint(ckpt)
    expected = assign_labels(score, *cuts)
    assert set(expected.tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(torch_reference(baked, blobs)[0], expected)
    problems, rows = check_model(baked, "baked", images, tmp_path / "exports", Console(file=io.StringIO()))
    assert problems == []
    assert set(rows) == {"digikam", "full", "contract_onnx"}
    assert all(a.loads for agreements in rows.values() for a in agreements)
