"""`iqs suggest`: BADGE's gradient embeddings and selection, and the command on a digiKam-style library."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from iqs.core.xmp import TAGS_KEY, embedded_xmp, read_xmp, sidecar_path
from iqs.data.demo.library import LibrarySpec, ensure_library, read_manifest
from iqs.train import suggest


def test_gradient_embedding_is_the_cross_entropy_gradient() -> None:
    """(p - onehot(ŷ)) ⊗ [z, 1] equals autograd's gradient of CE(Wz + b, ŷ) w.r.t. [W, b]."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 4))
    w = torch.tensor(rng.normal(size=(3, 4)), requires_grad=True)
    b = torch.tensor(rng.normal(size=3), requires_grad=True)
    logits = torch.from_numpy(z) @ w.T + b
    probs = logits.softmax(1).detach().numpy()
    got = suggest.gradient_embedding(probs, z)
    for i in range(len(z)):
        w.grad = b.grad = None
        loss = torch.nn.functional.cross_entropy(logits[i : i + 1], torch.tensor([int(probs[i].argmax())]))
        loss.backward(retain_graph=True)
        want = torch.cat([w.grad, b.grad[:, None]], 1).reshape(-1).numpy()
        np.testing.assert_allclose(got[i], want, rtol=1e-10, atol=1e-12)


def test_badge_spreads_a_batch_over_clusters() -> None:
    """Five tight clusters of equally uncertain points: a batch of five takes one from each (k-means++),
    where the five largest gradients would come from one cluster."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 6))
    centres *= 10 / np.linalg.norm(centres, axis=1, keepdims=True)
    grad = np.repeat(centres, 20, axis=0) + rng.normal(scale=0.01, size=(100, 6))
    grad[:20] *= 1.5  # the first cluster has the largest gradients
    for seed in range(5):
        chosen = suggest.badge_select(grad, 5, seed)
        assert sorted(set(chosen // 20)) == [0, 1, 2, 3, 4]
    assert set(np.argsort(-np.linalg.norm(grad, axis=1))[:5] // 20) == {0}


def test_select_picks_unlabelled_uncertain_photos() -> None:
    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(loc=c, size=(40, 8)) for c in (-3.0, 0.0, 3.0)])
    y = np.repeat([0, 1, 2], 40)
    labelled = np.r_[0:5, 40:45, 80:85]
    chosen, probs, norm = suggest.select("badge", x, labelled, y[labelled], 10, pca_dims=4)
    assert len(set(chosen)) == 10 and not set(chosen) & set(labelled)
    assert probs.shape == (120, 3) and np.allclose(probs.sum(1), 1)
    pool = np.setdiff1d(np.arange(120), labelled)
    # the chosen photos are the uncertain ones: their gradient lengths beat the pool's median
    assert np.median(norm[chosen]) > np.median(norm[pool])
    rand, _, _ = suggest.select("random", x, labelled, y[labelled], 10, seed=3)
    assert len(set(rand)) == 10 and not set(rand) & set(labelled)
    with pytest.raises(ValueError, match="two classes"):
        suggest.select("badge", x, labelled[:3], y[:3], 5)


@pytest.fixture(scope="module")
def small_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_library(
        tmp_path_factory.mktemp("lib") / "library", seed=0, spec=LibrarySpec(crops_per_photo=1, long_side=64)
    )


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from iqs.models import build_quality_model

    torch.manual_seed(0)
    cfg = {
        "backbone": {"name": "test_efficientnet", "weights": "none", "input_size": 64},
        "head": {"name": "regression", "hidden": [8]},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    model = build_quality_model(cfg)
    path = tmp_path_factory.mktemp("general") / "best.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "iqs_meta": model.meta}, path)
    return path


def _state(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _xmp_without_tags(path: Path) -> dict:
    return {k: v for k, v in read_xmp(path).items() if k != TAGS_KEY}


@pytest.mark.slow
def test_suggest_tags_only_unlabelled_photos_and_changes_nothing_else(
    small_library: Path, tiny_ckpt: Path, tmp_path: Path, capsys
) -> None:
    manifest = read_manifest(small_library)
    unlabelled = {f["path"] for f in manifest["frames"] if f["cls"] is None}
    assert (small_library / "digikam4.db").is_file()
    before = _state(small_library)
    out = tmp_path / "suggest.csv"
    args = [
        f"library={small_library}",
        "n=4",
        f"model={tiny_ckpt}",
        f"paths.cache_dir={tmp_path}",
        "-o",
        str(out),
    ]

    assert suggest.main([*args, "--tag", "--dry-run"]) == 0
    assert _state(small_library) == before  # a dry run writes nothing ...
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("[dry-run]") == 4 and "add tag iqs/label-me" in err  # ... and lists each change
    with open(out, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    chosen = [Path(r["path"]).relative_to(small_library).as_posix() for r in rows]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4] and len(set(chosen)) == 4
    assert set(chosen) <= unlabelled  # the bad cases are skipped, as the personal model skips them

    assert suggest.main(args) == 0  # no --tag: the CSV only
    assert _state(small_library) == before

    sidecars_before = {
        p: _xmp_without_tags(p) for p in small_library.rglob("*.xmp") if "broken" not in p.name
    }
    embedded_before = {p: embedded_xmp(p) for p in small_library.rglob("*.jpg")}
    assert suggest.main([*args, "--tag"]) == 0
    after = _state(small_library)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {sidecar_path(Path(c)).as_posix() for c in chosen}  # new sidecars, nothing else
    for c in chosen:
        xmp = read_xmp(sidecar_path(small_library / c))
        assert xmp[TAGS_KEY] == ["iqs/label-me"]
    assert {p: _xmp_without_tags(p) for p in sidecars_before} == sidecars_before
    assert {p: embedded_xmp(p) for p in embedded_before} == embedded_before
    assert suggest.main([*args, "--tag"]) == 0  # again: the tags are there already
    assert _state(small_library) == after


def test_suggest_says_what_is_wrong(tmp_path: Path, capsys) -> None:
    assert suggest.main([f"library={tmp_path / 'none'}", "model=x.ckpt"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert suggest.main([f"library={tmp_path}"]) == 2
    assert "model=" in capsys.readouterr().err
    assert suggest.main([f"library={tmp_path}", "model=x.ckpt", "method=smart"]) == 2
    assert "badge, random" in capsys.readouterr().err
