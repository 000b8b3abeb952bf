from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iqs.core.scale import assign_labels, gaussian_dist
from iqs.models.heads import HEADS, build_head, score_to_class_logits
from iqs.models.heads.base import INPUT_NORM_EPS, _round_down

T1, T2 = 5.0, 6.0
SCORE_HEADS = ("regression", "distribution")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: thread hand-offs cost more than they save, badly so on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synthetic() -> dict[str, torch.Tensor]:
    """Features that linearly determine a score spread over the common scale, plus its dist and label."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(384, 16, generator=gen)
    w = torch.randn(16, generator=gen)
    z = x @ w / w.norm()
    score = (5.5 + 1.5 * z).clamp(1.0, 10.0)
    std = np.full(len(score), 0.8)
    dist = torch.from_numpy(gaussian_dist(score.numpy(), std)).float()
    label = torch.from_numpy(assign_labels(score.numpy(), T1, T2))
    return {"x": x, "score": score, "dist": dist, "label": label}


@pytest.mark.parametrize("name", HEADS.names())
def test_head_outputs_shapes_and_keys(name: str) -> None:
    head = build_head(name, 16, T1, T2).eval()
    out = head(torch.randn(7, 16))
    assert out["score"].shape == (7,)
    assert out["logits3"].shape == (7, 3)
    torch.testing.assert_close(out["probs"], out["logits3"].softmax(-1))
    assert ("dist" in out) == (name == "distribution")
    pred = head.predict(out)
    assert torch.equal(pred["label"], out["logits3"].argmax(-1))
    assert pred["label"].dtype == torch.long and not pred["score"].requires_grad


@pytest.mark.parametrize("name", SCORE_HEADS)
def test_score_heads_classes_follow_thresholds(name: str) -> None:
    head = build_head(name, 16, T1, T2, hidden=[8]).eval()
    out = head(3 * torch.randn(500, 16))
    expected = assign_labels(out["score"].detach().numpy(), T1, T2)
    assert np.array_equal(out["logits3"].argmax(-1).numpy(), expected)


@pytest.mark.parametrize(("t1", "t2"), [(5.0, 6.0), (5.3, 6.7), (4.5, 7.25), (2.0, 2.1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_score_to_class_logits_reproduces_assign_labels_exactly(
    t1: float, t2: float, dtype: torch.dtype
) -> None:
    grid = torch.linspace(0.0, 11.0, 110_001, dtype=dtype)
    edges = torch.tensor([t1, t2], dtype=dtype)
    # The thresholds themselves and their nearest neighbours in this precision.
    around = torch.cat([edges, torch.nextafter(edges, edges + 1), torch.nextafter(edges, edges - 1)])
    random = torch.rand(5_000, generator=torch.Generator().manual_seed(1), dtype=dtype) * 12 - 0.5
    scores = torch.cat([grid, around, random])
    got = score_to_class_logits(scores, t1, t2).argmax(-1).numpy()
    assert np.array_equal(got, assign_labels(scores.numpy(), t1, t2))
    assert got.min() == 0 and got.max() == 2


def test_score_to_class_logits_ties_and_errors() -> None:
    logits = score_to_class_logits(torch.tensor([5.0, 6.0]), 5.0, 6.0)
    assert logits.argmax(-1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="t1 < t2"):
        score_to_class_logits(torch.tensor([1.0]), 6.0, 5.0)


@pytest.mark.parametrize(("t1", "t2"), [(5.0, 6.0), (5.3, 6.7), (2.0, 2.1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sharpness", [4.0, 3.0])
def test_min_free_normal_logit_at_the_threshold_edges(
    t1: float, t2: float, dtype: torch.dtype, sharpness: float
) -> None:
    """normal = a - relu(a - b) (no Min node for OpenCV's TF importer) keeps every class and tie of min(a, b)."""
    edges = torch.tensor([t1, t2], dtype=dtype)
    steps = [edges]
    for direction in (edges + 1, edges - 1):
        near = edges
        for _ in range(4):  # the four nearest representable scores on each side of each threshold
            near = torch.nextafter(near, direction)
            steps.append(near)
    # far outside the range too, where a - b rounds and only the sign argument holds
    far = torch.tensor([-1e6, -50.0, 0.0, 11.0, 1e3, 1e6, 3e7], dtype=dtype)
    scores = torch.cat([*steps, far])
    logits = score_to_class_logits(scores, t1, t2, sharpness)
    assert np.array_equal(logits.argmax(-1).numpy(), assign_labels(scores.numpy(), t1, t2))
    # the thresholds as the function rounds them (down, to the score's precision)
    lo, hi = (_round_down(t, dtype) for t in (t1, t2))
    a, b = scores - lo, hi - scores
    reference = sharpness * torch.minimum(a, b)
    # exact wherever the minimum is a (below the midpoint); elsewhere within the rounding of a - b
    below = a <= b
    assert torch.equal(logits[below, 1], reference[below])
    torch.testing.assert_close(logits[~below, 1], reference[~below], atol=0, rtol=4 * torch.finfo(dtype).eps)


def test_class_logits_export_without_min_node(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")

    class Logits(torch.nn.Module):
        def forward(self, s: torch.Tensor) -> torch.Tensor:
            return score_to_class_logits(s, T1, T2)

    path = tmp_path / "logits.onnx"
    torch.onnx.export(Logits(), (torch.zeros(4),), str(path), opset_version=17, dynamo=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Relu" in ops and not ops & {"Min", "Minimum", "Max"}


def test_distribution_score_is_expectation_over_bins() -> None:
    head = build_head("distribution", 16, T1, T2).eval()
    out = head(torch.randn(9, 16))
    dist = out["dist"].detach().double().numpy()
    np.testing.assert_allclose(dist.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["score"].detach().numpy(), dist @ np.arange(1, 11), rtol=1e-5)


def test_classification_score_is_expected_class_index() -> None:
    head = build_head("classification", 16, T1, T2).eval()
    out = head(torch.randn(9, 16))
    probs = out["logits3"].detach().double().softmax(-1).numpy()
    np.testing.assert_allclose(out["score"].detach().numpy(), probs @ np.array([0, 1, 2]), rtol=1e-5)


def test_classification_loss_matches_cross_entropy_and_class_weights() -> None:
    logits, label = torch.randn(20, 3), torch.randint(0, 3, (20,))
    batch, outputs = {"label": label}, {"logits3": logits}
    head = build_head("classification", 4, T1, T2, label_smoothing=0.1)
    torch.testing.assert_close(head.loss(outputs, batch), F.cross_entropy(logits, label, label_smoothing=0.1))
    weighted = build_head("classification", 4, T1, T2, class_weights=[2.0, 0.5, 1.0])
    per_sample = F.cross_entropy(logits, label, reduction="none") * torch.tensor([2.0, 0.5, 1.0])[label]
    torch.testing.assert_close(weighted.loss(outputs, batch), per_sample.mean())
    with pytest.raises(ValueError, match="class_weights"):
        build_head("classification", 4, T1, T2, class_weights=[1.0, 2.0])


# a pairwise head (rank) has no per-sample loss: tests/test_ranking.py checks its weights
@pytest.mark.parametrize("name", [n for n in HEADS.names() if not HEADS.get(n).pairwise])
def test_sample_weights_scale_per_sample_losses(name: str, synthetic) -> None:
    head = build_head(name, 16, T1, T2, **({"loss": "mse"} if name == "regression" else {})).eval()
    n = 8
    batch = {k: v[:n] for k, v in synthetic.items()}
    out = head(batch["x"])
    plain = head.loss(out, batch)
    torch.testing.assert_close(head.loss(out, batch, torch.full((n,), 2.0)), 2 * plain)
    one_hot = torch.zeros(n)
    one_hot[3] = float(n)
    single = head.loss({k: v[3:4] for k, v in out.items()}, {k: v[3:4] for k, v in batch.items()})
    torch.testing.assert_close(head.loss(out, batch, one_hot), single)
    with pytest.raises(ValueError, match="sample weights"):
        head.loss(out, batch, torch.ones(n + 1))


def test_regression_init_score_sets_the_starting_output() -> None:
    head = build_head("regression", 16, T1, T2, init_score=5.45, hidden=[4]).eval()
    # Zero the last layer's weights: only the bias speaks.
    torch.nn.init.zeros_(head.mlp[-1].weight)
    torch.testing.assert_close(head(torch.randn(3, 16))["score"], torch.full((3,), 5.45))


@pytest.mark.parametrize(
    ("name", "cfg"),
    [
        ("regression", {"loss": "mse"}),
        ("regression", {"loss": "huber", "huber_delta": 0.5}),
        ("regression", {"loss": "l1"}),
        ("regression", {"loss": "balanced_mse", "bmc_init_sigma": 1.0}),
        ("distribution", {}),
        ("classification", {"label_smoothing": 0.05}),
    ],
)
def test_heads_learn_a_synthetic_problem(name: str, cfg: dict, synthetic) -> None:
    torch.manual_seed(0)
    head = build_head(name, 16, T1, T2, **{**cfg, "hidden": [32], "dropout": 0.0})  # no dropout: an exact fit
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    train = {k: v[:256] for k, v in synthetic.items()}
    test = {k: v[256:] for k, v in synthetic.items()}

    def evaluate() -> tuple[float, float]:
        head.eval()
        with torch.no_grad():
            out = head(test["x"])
            loss = head.loss(out, test).item()
            acc = (head.predict(out)["label"] == test["label"]).float().mean().item()
        head.train()
        return loss, acc

    loss0, acc0 = evaluate()
    for step in range(150):
        idx = torch.randperm(256, generator=torch.Generator().manual_seed(step))[:64]
        batch = {k: v[idx] for k, v in train.items()}
        loss = head.loss(head(batch["x"]), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1, acc1 = evaluate()
    # Cross-entropy starts near ln 3 and cannot approach 0 with samples on the class boundaries.
    assert loss1 < (0.7 if name == "classification" else 0.5) * loss0, (loss0, loss1)
    assert acc1 > 0.75 and acc1 > acc0, (acc0, acc1)


def test_unknown_head_and_option_names_get_hints() -> None:
    with pytest.raises(KeyError, match="Did you mean 'regression'"):
        build_head("regresion", 16, T1, T2)
    with pytest.raises(KeyError, match="Did you mean 'dropout'"):
        build_head("distribution", 16, T1, T2, dropuot=0.1)
    with pytest.raises(KeyError, match="Did you mean 'balanced_mse'"):
        build_head("regression", 16, T1, T2, loss="balanced_mze")


@pytest.mark.parametrize("name", HEADS.names())
def test_batchnorm_input_norm_standardises_with_the_training_statistics(name: str) -> None:
    """Eval-mode inputs are z-scored with the training batches' averaged statistics, whatever the scale
    of each feature (multi-level features differ by orders of magnitude)."""
    from sklearn.preprocessing import StandardScaler

    gen = torch.Generator().manual_seed(1)
    scales = torch.logspace(-3, 3, 12)
    x = torch.randn(320, 12, generator=gen, dtype=torch.float64) * scales + 10 * scales
    head = build_head(name, 12, T1, T2, input_norm="batchnorm").double().train()
    batches = x.split(64)
    for batch in batches:
        head(batch)
    norm = head.mlp[0]
    assert isinstance(norm, torch.nn.BatchNorm1d) and not list(norm.parameters())
    # momentum=None: the plain average over batches of their means and unbiased variances
    mean = torch.stack([b.mean(0) for b in batches]).mean(0)
    var = torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(norm.running_mean, mean)
    torch.testing.assert_close(norm.running_var, var)
    head.eval()
    with torch.no_grad():
        z = norm(x).numpy()
    np.testing.assert_allclose(z, ((x - mean) / (var + INPUT_NORM_EPS).sqrt()).numpy(), rtol=1e-9, atol=1e-9)
    # ... which estimates the z-scores of the whole training set, even for the 1e-3 scaled features
    np.testing.assert_allclose(z, StandardScaler().fit_transform(x.numpy()), atol=0.1)
    assert head.cfg["input_norm"] == "batchnorm"
    assert not isinstance(build_head(name, 12, T1, T2).mlp[0], torch.nn.BatchNorm1d)


def test_unknown_input_norm_gets_a_hint() -> None:
    with pytest.raises(ValueError, match="Did you mean 'batchnorm'"):
        build_head("regression", 16, T1, T2, input_norm="batchnrom")


def test_head_traits_are_declared_on_the_class_recorded_in_the_meta_and_read_from_it() -> None:
    """Consumers read traits (has_dist, score_scale, regression_losses), never head names."""
    from iqs.deploy.export.onnx_wrappers import has_dist, output_names
    from iqs.models import build_quality_model
    from iqs.rebalance.balanced_mse import BalancedMseRebalance
    from iqs.rebalance.base import RebalanceConfigError

    for name in HEADS.names():
        cls = HEADS.get(name)
        assert cls.score_scale in ("common", "class_index", "latent")
        meta = {"head": "renamed", "has_dist": cls.has_dist, "score_scale": cls.score_scale}
        assert has_dist(meta) == cls.has_dist  # the trait wins over the (here misleading) name
        assert ("dist" in output_names("full", has_dist(meta))) == cls.has_dist
        if "balanced_mse" in cls.regression_losses:
            BalancedMseRebalance().check_head(name)
        else:
            with pytest.raises(RebalanceConfigError, match="balanced_mse"):
                BalancedMseRebalance().check_head(name)
    assert HEADS.get("distribution").has_dist and not HEADS.get("regression").has_dist
    # the model's meta records the traits of the head it was built with
    for name in ("regression", "distribution", "ordinal"):
        model = build_quality_model(
            {
                "backbone": {"name": "tf_efficientnet_lite0", "weights": "none"},
                "head": {"name": name},
                "thresholds": {"t1": 5.0, "t2": 6.0},
            }
        )
        cls = HEADS.get(name)
        assert (model.meta["has_dist"], model.meta["score_scale"]) == (cls.has_dist, cls.score_scale)
