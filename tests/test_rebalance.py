from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from scipy.ndimage import convolve1d, gaussian_filter1d
from scipy.stats import entropy

from iqs.core.errors import DataError
from iqs.core.scale import assign_labels
from iqs.rebalance import REBALANCERS, RebalanceConfigError, Rebalancer, build_rebalancer
from iqs.rebalance.weights import score_bin_index
from iqs.train.build import instantiate_node

CONF = Path(__file__).resolve().parents[1] / "conf" / "rebalance"
SOURCES = {"ava": 12_000, "koniq10k": 3_000, "spaq": 1_000}


def skewed_table(seed: int = 0, sources: dict[str, int] = SOURCES) -> pd.DataFrame:
    """AVA-like: scores ~ N(5.4, 0.75) clipped to the common scale, labels from thresholds (5, 6)."""
    rng = np.random.default_rng(seed)
    n = sum(sources.values())
    score = np.clip(rng.normal(5.4, 0.75, n), 1.0, 10.0)
    return pd.DataFrame(
        {
            "dataset": np.repeat(list(sources), list(sources.values())),
            "image_id": [str(i) for i in range(n)],
            "score": score,
            "label": assign_labels(score, 5.0, 6.0),
            "source_weight": 1.0,
        }
    )


def bins_of(df: pd.DataFrame, n_bins: int = 10) -> np.ndarray:
    return score_bin_index(df["score"].to_numpy(), n_bins)


def expected_per_key(weights: np.ndarray, keys: np.ndarray, n_keys: int, num_samples: int) -> np.ndarray:
    return num_samples * np.bincount(keys, weights=weights, minlength=n_keys) / weights.sum()


def drawn(sampler: torch.utils.data.Sampler) -> np.ndarray:
    return np.fromiter(iter(sampler), dtype=np.int64)


# --- registry and config contract ------------------------------------------------------------------


@pytest.mark.parametrize("name", REBALANCERS.names())
def test_every_strategy_has_a_config_and_honours_the_interface(name: str) -> None:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert cfg.name == name
    rb = instantiate_node(cfg)  # as `iqs train rebalance=<name>` builds it
    assert isinstance(rb, Rebalancer) and rb.describe()["name"] == name
    df = skewed_table()
    rb.prepare(df)
    kept = rb.filter_train(df)
    assert isinstance(kept, pd.DataFrame) and set(kept.index) <= set(df.index)
    sampler = rb.sampler(kept)
    if sampler is not None:
        assert len(sampler) == len(kept)
        assert drawn(sampler).max() < len(kept)
    w = rb.sample_weights(torch.tensor(df["score"].to_numpy()), torch.tensor(df["label"].to_numpy()))
    if w is not None:
        assert w.shape == (len(df),) and w.dtype == torch.float32
        assert float(w.mean()) == pytest.approx(1.0, rel=1e-5)
    assert rb.regression_loss in (None, "balanced_mse")


def test_config_errors_are_clear() -> None:
    with pytest.raises(
        RebalanceConfigError, match="unknown option 'alpah' for rebalance 'sampler'. Did you mean 'alpha'"
    ):
        build_rebalancer(**{"name": "sampler", "alpah": 0.5})
    # through Hydra's instantiate, as `iqs train rebalance=sampler +rebalance.alpah=0.5` builds it
    with pytest.raises(RebalanceConfigError, match="Did you mean 'alpha'"):
        instantiate_node(OmegaConf.merge(OmegaConf.load(CONF / "sampler.yaml"), {"alpah": 0.5}))
    with pytest.raises(RebalanceConfigError, match="Did you mean 'sampler'"):
        build_rebalancer(**{"name": "sampeler"})
    with pytest.raises(RebalanceConfigError, match="over must be"):
        build_rebalancer(**{"name": "sampler", "over": "scores"})
    with pytest.raises(RebalanceConfigError, match="ks must be"):
        build_rebalancer(**{"name": "lds", "ks": 4})


def test_bad_training_rows_are_named() -> None:
    df = skewed_table()
    df.loc[7, "score"] = 11.5
    with pytest.raises(DataError, match=r"row 7.*image_id='7'"):
        build_rebalancer(**{"name": "loss_weight"}).prepare(df)
    df = skewed_table().drop(columns="source_weight")
    with pytest.raises(DataError, match="source_weight"):
        build_rebalancer(**{"name": "dataset_balance"}).prepare(df)


# --- sampler ---------------------------------------------------------------------------------------


def test_sampler_alpha_1_gives_uniform_expected_counts_over_non_empty_bins_and_flattens_draws() -> None:
    df = skewed_table()
    rb = build_rebalancer(**{"name": "sampler", "alpha": 1.0, "over": "bins", "seed": 3})
    rb.prepare(df)
    keys = bins_of(df)
    counts = np.bincount(keys, minlength=10)
    nonempty = counts > 0
    assert nonempty.sum() >= 6 and (~nonempty).any()  # the table has rare and empty bins
    exp = expected_per_key(rb.row_weights(df), keys, 10, len(df))
    np.testing.assert_allclose(exp[nonempty], len(df) / nonempty.sum(), rtol=1e-9)
    assert (exp[~nonempty] == 0).all()

    got = np.bincount(keys[drawn(rb.sampler(df))], minlength=10)
    # every non-empty bin within 5 binomial standard deviations of its expectation
    p = exp / len(df)
    sd = np.sqrt(len(df) * p * (1 - p))
    assert (np.abs(got - exp) <= 5 * sd + 1e-9).all()
    assert counts[nonempty].max() / counts[nonempty].min() > 100
    assert got[nonempty].max() / got[nonempty].min() < 1.5
    assert entropy(got[nonempty]) > entropy(counts[nonempty]) + 0.5


def test_sampler_sqrt_inverse_and_classes() -> None:
    df = skewed_table()
    keys = bins_of(df)
    counts = np.bincount(keys, minlength=10)
    rb = build_rebalancer(**{"name": "sampler", "alpha": 0.5})
    rb.prepare(df)
    exp = expected_per_key(rb.row_weights(df), keys, 10, len(df))
    np.testing.assert_allclose(exp, len(df) * np.sqrt(counts) / np.sqrt(counts).sum(), rtol=1e-9)

    rb = build_rebalancer(**{"name": "sampler", "over": "classes", "num_samples": 30_000})
    rb.prepare(df)
    labels = df["label"].to_numpy()
    np.testing.assert_allclose(expected_per_key(rb.row_weights(df), labels, 3, 30_000), 10_000, rtol=1e-9)
    s = rb.sampler(df)
    assert len(s) == 30_000
    got = np.bincount(labels[drawn(s)], minlength=3)
    assert np.abs(got - 10_000).max() < 5 * np.sqrt(30_000 * (1 / 3) * (2 / 3))
    assert np.bincount(labels).max() / np.bincount(labels).min() > 1.3  # it was imbalanced


def test_sampler_is_seeded_and_successive_epochs_differ() -> None:
    df = skewed_table()
    a, b = (build_rebalancer(**{"name": "sampler", "seed": 5}) for _ in range(2))
    a.prepare(df)
    b.prepare(df)
    sa, sb = a.sampler(df), b.sampler(df)
    first = drawn(sa)
    np.testing.assert_array_equal(first, drawn(sb))
    assert not np.array_equal(first, drawn(sa))


def test_sampler_handles_empty_fine_bins() -> None:
    df = skewed_table()
    rb = build_rebalancer(**{"name": "sampler", "n_bins": 100})
    rb.prepare(df)
    w = rb.row_weights(df)
    assert np.isfinite(w).all() and (w > 0).all()
    assert (rb.counts == 0).sum() > 20 and (rb.table[rb.counts == 0] == 0).all()


# --- loss weights ----------------------------------------------------------------------------------


@pytest.mark.parametrize("over", ["bins", "classes"])
def test_loss_weights_equalise_per_bin_totals_with_mean_one(over: str) -> None:
    df = skewed_table()
    rb = build_rebalancer(**{"name": "loss_weight", "alpha": 1.0, "over": over})
    rb.prepare(df)
    w = (
        rb.sample_weights(torch.tensor(df["score"].to_numpy()), torch.tensor(df["label"].to_numpy()))
        .double()
        .numpy()
    )
    keys, n = (bins_of(df), 10) if over == "bins" else (df["label"].to_numpy(), 3)
    totals = np.bincount(keys, weights=w, minlength=n)
    unweighted = np.bincount(keys, minlength=n)
    nonempty = unweighted > 0
    np.testing.assert_allclose(totals[nonempty], len(df) / nonempty.sum(), rtol=1e-5)
    assert w.mean() == pytest.approx(1.0, rel=1e-6)
    # the weighted loss of a constant error per sample is now the same for every bin
    assert unweighted[nonempty].max() / unweighted[nonempty].min() > 1.3


# --- LDS -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sqrt_counts", [False, True])
def test_lds_weights_match_a_direct_scipy_computation(sqrt_counts: bool) -> None:
    df = skewed_table()
    rb = build_rebalancer(
        **{"name": "lds", "bin_width": 0.1, "ks": 5, "sigma": 2.0, "sqrt_counts": sqrt_counts}
    )
    rb.prepare(df)
    scores = df["score"].to_numpy()
    # independent computation on the same histogram: 100 bins of 0.1 over [0.5, 10.5]
    hist, _ = np.histogram(scores, bins=np.linspace(0.5, 10.5, 101))
    hist = np.sqrt(hist) if sqrt_counts else hist.astype(float)
    delta = np.zeros(5)
    delta[2] = 1.0
    window = gaussian_filter1d(delta, sigma=2.0)
    smoothed = convolve1d(hist, weights=window / window.max(), mode="constant")
    idx = np.clip(np.digitize(scores, np.linspace(0.5, 10.5, 101)[1:-1]), 0, 99)
    want = 1.0 / smoothed[idx]
    want *= len(want) / want.sum()
    got = rb.sample_weights(torch.tensor(scores), torch.tensor(df["label"].to_numpy())).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)

    probe = rb.sample_weights(torch.tensor([5.42, 6.5, 7.5, 3.5]), torch.zeros(4)).numpy()
    assert probe[0] < probe[1] < probe[2]  # rarer scores get larger weights
    assert probe[3] > 3 * probe[0]


def test_lds_smoothing_spreads_density_to_neighbouring_bins() -> None:
    # two scores alone in their fine bins: one next to a crowd, one isolated. Inverse frequency would
    # weight them alike; LDS gives the one beside the crowd a much smaller weight.
    df = pd.DataFrame({"score": [5.0] * 200 + [5.15, 8.0], "label": 0})
    rb = build_rebalancer(**{"name": "lds", "alpha": 1.0})
    rb.prepare(df)
    w = rb.sample_weights(torch.tensor([5.15, 8.0]), torch.zeros(2)).numpy()
    assert w[1] > 20 * w[0]


# --- balanced MSE ----------------------------------------------------------------------------------


def test_balanced_mse_selects_the_loss_and_rejects_other_heads() -> None:
    rb = build_rebalancer(**{"name": "balanced_mse", "init_noise_sigma": 0.8})
    assert rb.regression_loss == "balanced_mse"
    assert rb.loss_params == {"init_noise_sigma": 0.8}
    rb.check_head("regression")
    for head in ("distribution", "classification"):
        with pytest.raises(RebalanceConfigError, match=f"needs head=regression, got head={head}"):
            rb.check_head(head)
    with pytest.raises(RebalanceConfigError, match="init_noise_sigma"):
        build_rebalancer(**{"name": "balanced_mse", "init_noise_sigma": 0})
    assert build_rebalancer(**{"name": "none"}).regression_loss is None


# --- class cap -------------------------------------------------------------------------------------


def test_class_cap_undersamples_every_class_to_the_cap() -> None:
    df = skewed_table()
    counts = df["label"].value_counts()
    rb = build_rebalancer(**{"name": "class_cap", "cap": None, "seed": 1})
    rb.prepare(df)
    kept = rb.filter_train(df)
    assert (kept["label"].value_counts() == counts.min()).all()
    assert kept.index.is_monotonic_increasing and kept.equals(df.loc[kept.index])

    cap = int(counts.median()) - 10  # some classes above the cap, one below
    assert (counts > cap).sum() == 2 and (counts < cap).sum() == 1
    rb = build_rebalancer(**{"name": "class_cap", "cap": cap, "seed": 1})
    rb.prepare(df)
    after = rb.filter_train(df)["label"].value_counts()
    for c, n in counts.items():
        assert after[c] == min(n, cap)

    again = build_rebalancer(**{"name": "class_cap", "cap": cap, "seed": 1})
    again.prepare(df)
    other = build_rebalancer(**{"name": "class_cap", "cap": cap, "seed": 2})
    other.prepare(df)
    assert again.filter_train(df).index.equals(rb.filter_train(df).index)
    assert not other.filter_train(df).index.equals(rb.filter_train(df).index)


# --- dataset balance -------------------------------------------------------------------------------


def test_dataset_balance_draws_every_source_equally() -> None:
    df = skewed_table()
    rb = build_rebalancer(**{"name": "dataset_balance", "seed": 0})
    rb.prepare(df)
    src = pd.factorize(df["dataset"])[0]
    exp = expected_per_key(rb.row_weights(df), src, 3, len(df))
    np.testing.assert_allclose(exp, len(df) / 3, rtol=1e-9)
    got = np.bincount(src[drawn(rb.sampler(df))], minlength=3)
    assert np.abs(got - len(df) / 3).max() < 5 * np.sqrt(len(df) * (1 / 3) * (2 / 3))


def test_dataset_balance_follows_source_weights_and_can_flatten_within_sources() -> None:
    df = skewed_table()
    df["source_weight"] = df["dataset"].map({"ava": 2.0, "koniq10k": 1.0, "spaq": 1.0})
    rb = build_rebalancer(**{"name": "dataset_balance", "within": "bins", "num_samples": 8000})
    rb.prepare(df)
    w = rb.row_weights(df)
    src = pd.factorize(df["dataset"])[0]
    np.testing.assert_allclose(expected_per_key(w, src, 3, 8000), [4000, 2000, 2000], rtol=1e-9)
    ava = (df["dataset"] == "ava").to_numpy()
    keys = bins_of(df)[ava]
    per_bin = np.bincount(keys, weights=w[ava], minlength=10)
    np.testing.assert_allclose(per_bin[per_bin > 0], per_bin[per_bin > 0].mean(), rtol=1e-9)


# --- effect on a model ------------------------------------------------------------------------------


def _fit_linear(
    x: torch.Tensor, y: torch.Tensor, rb: Rebalancer, df: pd.DataFrame, epochs: int = 6
) -> np.ndarray:
    """Least squares with minibatch Adam through the strategy's sampler and loss weights; returns predictions.

    Batches are cut from the sampler's index stream directly (what a DataLoader does, minus the
    per-sample collation that would make this test slow)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    xc = (x - 5.5)[:, None]  # centred, so slope and intercept converge independently
    labels = torch.tensor(df["label"].to_numpy())
    sampler = rb.sampler(df)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.tensor(list(sampler)) if sampler is not None else torch.randperm(len(y), generator=gen)
        for b in order.split(256):
            err = (model(xc[b]).squeeze(1) - y[b]) ** 2
            w = rb.sample_weights(y[b], labels[b])
            loss = err.mean() if w is None else (w * err).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return model(xc).squeeze(1).numpy()


@pytest.mark.slow
def test_rebalancing_improves_rare_score_predictions_of_a_toy_regressor() -> None:
    # A noisy 1-D feature of an AVA-like score: the MSE-optimal fit under the skewed prior shrinks every
    # prediction towards 5.4 (the "always predicts 5" failure): low scores are over-predicted, high
    # scores under-predicted. Rebalancing must cut that tail bias and the tail error.
    df = skewed_table(seed=4, sources={"ava": 8000})
    y = torch.tensor(df["score"].to_numpy(), dtype=torch.float32)
    x = y + torch.randn(len(y), generator=torch.Generator().manual_seed(1)) * 0.75
    lo, hi = (y < 4.4).numpy(), (y > 6.4).numpy()
    assert 0.03 < (lo | hi).mean() < 0.25

    def tail_errors(cfg: dict) -> tuple[float, float]:
        rb = build_rebalancer(**cfg)
        rb.prepare(df)
        err = _fit_linear(x, y, rb, df) - y.numpy()
        return abs(err[lo].mean()) + abs(err[hi].mean()), float(np.abs(err[lo | hi]).mean())

    base_bias, base_mae = tail_errors({"name": "none"})
    assert base_bias > 1.0  # the shrinkage is there to be fixed
    for cfg in ({"name": "sampler"}, {"name": "loss_weight"}, {"name": "lds"}):
        bias, mae = tail_errors(cfg)
        assert bias < 0.5 * base_bias, cfg["name"]
        assert mae < 0.9 * base_mae, cfg["name"]


# --- source weights ---------------------------------------------------------------------------------

SOURCE_WEIGHTS = {"ava": 0.5, "koniq10k": 3.0, "spaq": 2.0}


def weighted_table() -> pd.DataFrame:
    df = skewed_table()
    df["source_weight"] = df["dataset"].map(SOURCE_WEIGHTS)
    return df


def drawn_share(rb: Rebalancer, df: pd.DataFrame) -> pd.Series:
    rb.prepare(df)
    sampler = rb.sampler(rb.filter_train(df))
    assert sampler is not None, f"{rb.name}: unequal source weights must give a sampler"
    kept = rb.filter_train(df)
    return kept["dataset"].iloc[drawn(sampler)].value_counts(normalize=True)


def assert_share(got: pd.Series, expected: dict[str, float], n: int) -> None:
    for s, p in expected.items():
        # 5 binomial standard errors: fails only when the composition is wrong
        assert abs(got.get(s, 0.0) - p) < 5 * np.sqrt(p * (1 - p) / n), (s, got.get(s, 0.0), p)


@pytest.mark.parametrize("name", ["none", "loss_weight", "lds"])
def test_source_weight_is_a_sampling_weight_without_a_sampling_strategy(name: str) -> None:
    # no draw weights of its own: source s is drawn in proportion to weight_s * rows_s
    df = weighted_table()
    mass = {s: SOURCE_WEIGHTS[s] * n for s, n in SOURCES.items()}
    expected = {s: m / sum(mass.values()) for s, m in mass.items()}
    assert_share(drawn_share(build_rebalancer(**{"name": name}), df), expected, len(df))


def test_source_weight_composes_with_the_sampler_strategys_weights() -> None:
    # over classes, alpha 1: a row weighs 1/count(its class); times its source's weight
    df = weighted_table()
    class_count = df["label"].map(df["label"].value_counts())
    mass = (df["dataset"].map(SOURCE_WEIGHTS) / class_count).groupby(df["dataset"]).sum()
    expected = (mass / mass.sum()).to_dict()
    got = drawn_share(build_rebalancer(**{"name": "sampler", "over": "classes", "seed": 1}), df)
    assert_share(got, expected, len(df))


def test_source_weight_composes_with_dataset_balance_and_class_cap() -> None:
    df = weighted_table()
    total = sum(SOURCE_WEIGHTS.values())
    got = drawn_share(build_rebalancer(**{"name": "dataset_balance", "seed": 2}), df)
    assert_share(got, {s: w / total for s, w in SOURCE_WEIGHTS.items()}, len(df))
    # class_cap undersamples first; the weights then act on the rows it kept
    rb = build_rebalancer(**{"name": "class_cap", "seed": 0})
    rb.prepare(df)
    kept = rb.filter_train(df)
    mass = {s: SOURCE_WEIGHTS[s] * n for s, n in kept["dataset"].value_counts().items()}
    expected = {s: m / sum(mass.values()) for s, m in mass.items()}
    assert_share(drawn_share(build_rebalancer(**{"name": "class_cap", "seed": 0}), df), expected, len(kept))


def test_equal_source_weights_leave_plain_shuffling_alone() -> None:
    df = skewed_table()
    df["source_weight"] = 2.0  # equal weights, whatever their value, change nothing
    rb = build_rebalancer(**{"name": "none"})
    rb.prepare(df)
    assert rb.sampler(df) is None
    bad = df.assign(source_weight=np.where(df.index == 7, np.nan, 1.0))
    with pytest.raises(DataError, match="source_weight"):
        rb.sampler(bad)
