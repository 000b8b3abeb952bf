from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import logsumexp
from scipy.stats import wasserstein_distance

from iqs.losses import REGRESSION_LOSSES, BalancedMSELoss, bmc_loss, emd_loss, make_regression_loss


def _random_hist(rng: np.random.Generator, n: int, k: int = 10) -> np.ndarray:
    h = rng.gamma(0.7, size=(n, k))
    return h / h.sum(axis=1, keepdims=True)


def test_emd_r1_is_wasserstein_over_bin_positions_divided_by_bins() -> None:
    rng = np.random.default_rng(0)
    p, q = _random_hist(rng, 32), _random_hist(rng, 32)
    bins = np.arange(1, 11)
    expected = np.array([wasserstein_distance(bins, bins, p[i], q[i]) for i in range(32)]) / 10
    got = emd_loss(torch.from_numpy(p), torch.from_numpy(q), r=1, reduction="none").numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_emd_r2_matches_cumulative_sum_formula() -> None:
    rng = np.random.default_rng(1)
    p, q = _random_hist(rng, 16), _random_hist(rng, 16)
    expected = np.sqrt(np.mean((np.cumsum(p, axis=1) - np.cumsum(q, axis=1)) ** 2, axis=1))
    tp, tq = torch.from_numpy(p), torch.from_numpy(q)
    np.testing.assert_allclose(emd_loss(tp, tq, reduction="none").numpy(), expected, rtol=1e-12)
    assert emd_loss(tp, tq).item() == pytest.approx(expected.mean(), rel=1e-12)
    assert emd_loss(tp, tq, reduction="sum").item() == pytest.approx(expected.sum(), rel=1e-12)


def test_emd_is_zero_for_equal_distributions_with_finite_gradient() -> None:
    p = torch.from_numpy(_random_hist(np.random.default_rng(2), 4)).requires_grad_(True)
    loss = emd_loss(p, p.detach().clone())
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(p.grad).all()


def test_emd_is_positive_for_shifted_distributions_and_rejects_bad_input() -> None:
    p = torch.zeros(1, 10)
    p[0, 2] = 1.0
    q = torch.roll(p, 3, dims=1)
    # All mass moved 3 bins: |cdf diff| is 1 on 3 of the 10 bins.
    assert emd_loss(p, q, r=2).item() == pytest.approx(np.sqrt(0.3))
    with pytest.raises(ValueError, match="same shape"):
        emd_loss(p, torch.zeros(1, 9))
    with pytest.raises(ValueError, match="r >= 1"):
        emd_loss(p, q, r=0.5)
    with pytest.raises(ValueError, match="reduction"):
        emd_loss(p, q, reduction="avg")


def test_bmc_matches_direct_numpy_computation() -> None:
    rng = np.random.default_rng(3)
    pred, target, sigma = rng.uniform(1, 10, 12), rng.uniform(1, 10, 12), 1.3
    logits = -((pred[:, None] - target[None, :]) ** 2) / (2 * sigma**2)
    expected = -(np.diag(logits) - logsumexp(logits, axis=1)) * 2 * sigma**2
    got = bmc_loss(
        torch.from_numpy(pred), torch.from_numpy(target), torch.tensor(sigma**2, dtype=torch.float64)
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # The module keeps sigma as a float32 parameter, hence the looser tolerance.
    module = BalancedMSELoss(init_noise_sigma=sigma)
    got = module(torch.from_numpy(pred).float(), torch.from_numpy(target).float())
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-5)


def test_bmc_gradient_reaches_sigma_and_predictions() -> None:
    loss_fn = make_regression_loss("balanced_mse", init_noise_sigma=0.8)
    pred = torch.tensor([2.0, 5.0, 5.5, 9.0], requires_grad=True)
    loss_fn(pred, torch.tensor([3.0, 5.2, 5.0, 8.0])).mean().backward()
    assert loss_fn.noise_sigma.grad is not None and loss_fn.noise_sigma.grad.abs().item() > 0
    assert pred.grad.abs().sum().item() > 0
    with pytest.raises(ValueError, match="init_noise_sigma"):
        BalancedMSELoss(0.0)


@pytest.mark.parametrize(
    ("name", "kwargs", "reference"),
    [
        ("mse", {}, lambda p, t: F.mse_loss(p, t)),
        ("l1", {}, lambda p, t: F.l1_loss(p, t)),
        ("huber", {"delta": 0.5}, lambda p, t: F.huber_loss(p, t, delta=0.5)),
    ],
)
def test_pointwise_losses_match_torch_functional(name, kwargs, reference) -> None:
    gen = torch.Generator().manual_seed(4)
    pred, target = torch.rand(64, generator=gen) * 9 + 1, torch.rand(64, generator=gen) * 9 + 1
    per_sample = make_regression_loss(name, **kwargs)(pred, target)
    assert per_sample.shape == (64,)
    torch.testing.assert_close(per_sample.mean(), reference(pred, target))


def test_loss_registry_errors() -> None:
    assert {"mse", "l1", "huber", "balanced_mse"} <= set(REGRESSION_LOSSES.names())
    with pytest.raises(KeyError, match="Did you mean 'huber'"):
        make_regression_loss("hubber")
    with pytest.raises(TypeError, match="does not accept"):
        make_regression_loss("mse", delta=1.0)
