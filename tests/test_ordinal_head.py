"""The CORAL ordinal head: loss against the paper's formula in numpy, rank consistency, the head contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iqs.core.scale import assign_labels
from iqs.models import build_quality_model
from iqs.models.heads import build_head
from iqs.models.heads.ordinal import cumulative_levels

T1, T2 = 5.0, 6.0


def coral_loss_numpy(g: np.ndarray, b: np.ndarray, y: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Cao et al. 2020, eq. 4: -sum_k lam_k [y_k log s(g+b_k) + (1-y_k) log(1 - s(g+b_k))], per sample."""
    z = g[:, None] + b[None, :]
    s = 1.0 / (1.0 + np.exp(-z))
    yk = (y[:, None] > np.arange(len(b))[None, :]).astype(np.float64)
    return -(lam[None, :] * (yk * np.log(s) + (1 - yk) * np.log(1 - s))).sum(axis=1)


def test_cumulative_levels_are_the_extended_binary_labels() -> None:
    got = cumulative_levels(torch.tensor([0, 1, 2]))
    assert got.tolist() == [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]


@pytest.mark.parametrize("lam", [None, [2.0, 0.5]])
def test_loss_matches_the_papers_formula(lam) -> None:
    torch.manual_seed(0)
    head = build_head("ordinal", 8, T1, T2, importance_weights=lam).double().eval()
    with torch.no_grad():
        head.bias_first.fill_(0.3)
        head.bias_gap_raw.fill_(0.2)
    x = torch.randn(40, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    out = head(x)
    got = head.loss(out, {"label": y}).item()
    g = out["latent"].detach().numpy()
    b = np.array([0.3, 0.3 - np.log1p(np.exp(0.2))])
    ref = coral_loss_numpy(g, b, y.numpy(), np.ones(2) if lam is None else np.asarray(lam)).mean()
    assert got == pytest.approx(ref, rel=1e-10)


def test_probabilities_are_rank_consistent_and_score_is_expected_index() -> None:
    head = build_head("ordinal", 8, T1, T2).double().eval()
    with torch.no_grad():
        head.bias_gap_raw.fill_(-30.0)  # cuts almost equal: P(normal) underflows, but stays >= 0
        out = head(10 * torch.randn(200, 8, dtype=torch.float64))
    p_above = torch.sigmoid(out["cum_logits"])
    assert bool((p_above[:, 0] >= p_above[:, 1]).all())
    probs = out["coral_probs"].numpy()
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(out["score"].numpy(), probs @ np.array([0.0, 1.0, 2.0]), atol=1e-9)
    # the score is monotone in the latent: it ranks images like g(x)
    order = np.argsort(out["latent"].numpy())
    assert np.all(np.diff(out["score"].numpy()[order]) >= 0)


def test_class_is_corals_rule_the_count_of_tasks_above_one_half() -> None:
    head = build_head("ordinal", 8, T1, T2).double().eval()
    with torch.no_grad():
        head.bias_first.fill_(0.7)
        head.bias_gap_raw.fill_(1.1)
        out = head(3 * torch.randn(2000, 8, dtype=torch.float64))
    expected = (torch.sigmoid(out["cum_logits"]) > 0.5).sum(-1)
    assert torch.equal(head.predict(out)["label"], expected)
    assert set(expected.tolist()) == {0, 1, 2}
    # ... which is not always the most probable class: the middle one often loses to its neighbours
    assert (out["coral_probs"].argmax(-1) != expected).any()


def test_ordinal_head_learns_ordered_classes() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 16, generator=gen)
    w = torch.randn(16, generator=gen)
    score = 5.5 + 1.5 * (x @ w / w.norm())
    label = torch.from_numpy(assign_labels(score.numpy(), T1, T2))
    torch.manual_seed(0)
    head = build_head("ordinal", 16, T1, T2, dropout=0.0)
    opt = torch.optim.Adam(head.parameters(), lr=2e-2)
    for _ in range(300):
        loss = head.loss(head(x[:384]), {"label": label[:384]})
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        pred = head.predict(head(x[384:]))
    assert (pred["label"] == label[384:]).float().mean() > 0.85


@pytest.mark.slow
def test_meta_records_the_class_index_scale() -> None:
    cfg = {
        "backbone": {"name": "resnet50", "weights": "none"},
        "head": {"name": "ordinal"},
        "thresholds": {"t1": T1, "t2": T2},
    }
    model = build_quality_model(cfg, pretrained=False)
    assert model.meta["score_scale"] == "class_index"
    assert build_quality_model(model.meta).meta["head_cfg"] == model.meta["head_cfg"]


@pytest.mark.slow
def test_ordinal_head_exports_through_the_digikam_profile(tmp_path) -> None:
    """Real lite0 backbone + ordinal head -> the digikam .pb: readNetFromTensorflow's argmax = the head's class."""
    from iqs.core.preprocess import DigikamToBackbone, digikam_blob
    from iqs.deploy.compat.opencv_matrix import run_on_blobs
    from iqs.deploy.export import exporter as export
    from test_export import demo_photos, make_model, save_checkpoint

    photos = demo_photos(n=14)
    blobs = np.concatenate([digikam_blob(p) for p in photos])
    model = make_model("ordinal")
    adapt = DigikamToBackbone.from_meta(model.meta)
    with torch.no_grad():
        latent = model(adapt(torch.from_numpy(blobs)))["latent"].numpy()
        # stretch the latent (terciles 8 apart, well beyond the sigmoid's width) and put the cuts at its
        # terciles, so that all three classes occur
        q1, q2 = np.quantile(latent, [1 / 3, 2 / 3])
        k = 8.0 / (q2 - q1)
        model.head.mlp[-1].weight.mul_(k)
        q1, q2 = k * q1, k * q2
        model.head.bias_first.fill_(-float(q1))
        model.head.bias_gap_raw.fill_(float(np.log(np.expm1(q2 - q1))))
        ref = model(adapt(torch.from_numpy(blobs)))
    ref_cls = ref["probs"].argmax(1).numpy()
    assert set(ref_cls.tolist()) == {0, 1, 2}
    ckpt = save_checkpoint(model, tmp_path / "best.ckpt")
    # checked in one release on export: the test runs it in that release itself
    verify = "verify_opencv=[4.10.0.84]"
    assert export.main([f"checkpoint={ckpt}", f"out_dir={tmp_path / 'exports'}", verify]) == 0
    # the .pb digiKam loads, in an OpenCV release digiKam links (one net for every blob)
    (run,) = run_on_blobs(tmp_path / "exports" / "best.digikam.pb", blobs, ("4.10.0.84",)).values()
    got = np.array(run.probs)
    np.testing.assert_array_equal(got.argmax(1), ref_cls)
    np.testing.assert_allclose(got, ref["probs"].numpy(), atol=1e-4)
    assert "expected class index" in (tmp_path / "exports" / "MODEL_CARD.md").read_text()
