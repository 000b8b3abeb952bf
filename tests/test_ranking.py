"""Within-source ranking: UNIQUE's fidelity loss against numpy, pairs that never cross sources, the batch
sampler, and a toy mixture where ranking recovers a shared latent quality that linear mapping scrambles."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm, spearmanr

from iqs.core.scale import gaussian_dist
from iqs.losses.fidelity import (
    FIDELITY_EPS,
    batch_fidelity,
    dist_std,
    within_source_fidelity,
    within_source_pairs,
)
from iqs.models.heads import build_head
from iqs.train.pair_batches import WithinSourceBatchSampler


def unique_loss_numpy(f, mu, sd, group, w=None) -> float:
    """Zhang et al. 2021: p = Phi((mu_i - mu_j) / sqrt(sd_i^2 + sd_j^2)), p_hat = Phi((f_i - f_j) / sqrt(2)),
    fidelity 1 - sqrt(p p_hat) - sqrt((1-p)(1-p_hat)), over the pairs of one source (mean, pair weight = mean)."""
    losses, weights = [], []
    for i, j in itertools.combinations(range(len(f)), 2):
        if group[i] != group[j]:
            continue
        if sd is None or not (sd[i] > 0 or sd[j] > 0):
            p = (np.sign(mu[i] - mu[j]) + 1) / 2
        else:
            p = norm.cdf((mu[i] - mu[j]) / math.hypot(sd[i], sd[j]))
        p_hat = norm.cdf((f[i] - f[j]) / math.sqrt(2))
        eps = FIDELITY_EPS
        losses.append(1 - math.sqrt(p * p_hat + eps) - math.sqrt((1 - p) * (1 - p_hat) + eps))
        weights.append(1.0 if w is None else (w[i] + w[j]) / 2)
    return float(np.mean(np.array(losses) * np.array(weights)))


def test_fidelity_loss_matches_unique_formulas() -> None:
    rng = np.random.default_rng(0)
    n = 30
    f, mu = rng.normal(size=n), rng.uniform(1, 10, n)
    sd, group, w = rng.uniform(0.3, 1.5, n), rng.integers(0, 3, n), rng.uniform(0.2, 2, n)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    got = within_source_fidelity(t(f), t(mu), torch.tensor(group), t(sd)).item()
    assert got == pytest.approx(unique_loss_numpy(f, mu, sd, group), rel=1e-10)
    got_w = within_source_fidelity(t(f), t(mu), torch.tensor(group), t(sd), t(w)).item()
    assert got_w == pytest.approx(unique_loss_numpy(f, mu, sd, group, w), rel=1e-10)
    hard = within_source_fidelity(t(f), t(mu), torch.tensor(group)).item()
    assert hard == pytest.approx(unique_loss_numpy(f, mu, None, group), rel=1e-10)


def test_dist_std_and_batch_loss_use_the_label_distributions() -> None:
    mu, sd = np.array([3.0, 5.5, 7.0]), np.array([0.8, 1.2, 0.6])
    dist = torch.from_numpy(gaussian_dist(mu, sd))
    std = dist_std(dist).numpy()
    centres = np.arange(1, 11)
    ref = np.sqrt(dist.numpy() @ centres**2 - (dist.numpy() @ centres) ** 2)
    np.testing.assert_allclose(std, ref, rtol=1e-12)
    f = torch.tensor([0.1, -0.3, 0.9], dtype=torch.float64)
    batch = {"score": torch.from_numpy(mu), "dataset_idx": torch.tensor([0, 0, 0]), "dist": dist}
    assert batch_fidelity(f, batch).item() == pytest.approx(unique_loss_numpy(f.numpy(), mu, ref, [0, 0, 0]))


def test_pairs_never_cross_sources() -> None:
    group = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 1, 1])
    i, j = within_source_pairs(group)
    assert bool((group[i] == group[j]).all()) and bool((i < j).all())
    counts = torch.bincount(group)
    assert len(i) == sum(int(c) * (int(c) - 1) // 2 for c in counts)
    # any increasing affine re-mapping of one source's labels, and any offset of its predictions, leave
    # the loss unchanged: nothing is compared across sources
    rng = np.random.default_rng(1)
    f, mu = torch.from_numpy(rng.normal(size=10)), torch.from_numpy(rng.uniform(1, 10, 10))
    base = within_source_fidelity(f, mu, group)
    src1 = group == 1
    assert within_source_fidelity(
        f + 5.0 * src1, torch.where(src1, 0.3 * mu + 2, mu), group
    ) == pytest.approx(base.item(), abs=1e-12)
    # ... while one pooled group would compare them
    assert within_source_fidelity(f + 5.0 * src1, mu, torch.zeros(10)).item() != pytest.approx(base.item())
    assert within_source_fidelity(f[:3], mu[:3], torch.tensor([0, 1, 2])).item() == 0.0


def test_within_source_batches_are_per_source_blocks() -> None:
    group = np.repeat([0, 1, 2, 3], [300, 60, 5, 1])  # source 3 has one row: no pair possible
    sampler = WithinSourceBatchSampler(group, batch_size=32, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == math.ceil(365 / 32)
    seen = np.concatenate(batches)
    assert not np.isin(seen, np.flatnonzero(group == 3)).any()
    for b in batches:
        assert len(set(b)) == len(b)  # no row twice in a batch
        _, per_source = np.unique(group[b], return_counts=True)
        assert per_source.min() >= 2
    # the big source is drawn without replacement: an epoch covers it
    covered = np.isin(np.flatnonzero(group == 0), seen).mean()
    assert covered > 0.9
    again = WithinSourceBatchSampler(group, batch_size=32, seed=0)
    assert [list(b) for b in again] == [list(b) for b in batches]
    assert list(sampler) != batches  # the next epoch is drawn afresh
    two = WithinSourceBatchSampler(group, batch_size=32, sources_per_batch=2, seed=0)
    assert all(len(np.unique(group[b])) <= 2 for b in two)


def toy_mixture(seed: int, n: int = 400):
    """Three sources see overlapping ranges of one latent quality q and report it through different
    non-linear scales, each mapped linearly from its native range onto [1, 10] (the `common scale`).
    Features: q, q^2, q^3 plus a `style` feature that tells the sources apart but says nothing about q."""
    rng = np.random.default_rng(seed)
    specs = [  # latent range, native scale, native range
        ((0.0, 1.0), lambda q: q**3, (0.0, 1.0)),
        ((0.5, 1.5), lambda q: np.exp(2 * q), (np.exp(1.0), np.exp(3.0))),
        ((1.0, 2.0), np.sqrt, (1.0, math.sqrt(2.0))),
    ]
    xs, common, latent, group = [], [], [], []
    for s, ((lo, hi), scale, (nlo, nhi)) in enumerate(specs):
        q = rng.uniform(lo, hi, n)
        style = s + rng.normal(scale=0.3, size=n)
        xs.append(np.stack([q, q**2, q**3, style], 1))
        common.append(1 + 9 * (scale(q) - nlo) / (nhi - nlo))
        latent.append(q)
        group.append(np.full(n, s))
    x = np.concatenate(xs)
    x = (x - x.mean(0)) / x.std(0)
    cat = lambda a: torch.from_numpy(np.concatenate(a))  # noqa: E731
    return torch.from_numpy(x).float(), cat(common).float(), cat(latent), cat(group)


def fit(name: str, x, score, group, steps: int = 400) -> torch.nn.Module:
    torch.manual_seed(0)
    head = build_head(name, x.shape[1], 5.0, 6.0, hidden=[16], dropout=0.0)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=gen)[:128]
        batch = {"score": score[idx], "dataset_idx": group[idx]}
        loss = head.loss(head(x[idx]), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


@pytest.mark.slow
def test_ranking_recovers_the_latent_order_that_linear_mapping_scrambles() -> None:
    x, common, _, group = toy_mixture(0)
    xt, _, latent_t, group_t = toy_mixture(1)
    srcc = {}
    for name in ("regression", "rank"):
        head = fit(name, x, common, group)
        with torch.no_grad():
            pred = head(xt)["score"].numpy()
        srcc[name] = spearmanr(pred, latent_t.numpy())[0]
        if name == "rank":  # inside each source, the ranking is right
            for s in range(3):
                mask = (group_t == s).numpy()
                assert spearmanr(pred[mask], latent_t.numpy()[mask])[0] > 0.95, s
    assert srcc["rank"] > 0.95, srcc
    assert srcc["rank"] > srcc["regression"] + 0.1, srcc
