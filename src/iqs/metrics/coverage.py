"""How often the 95% intervals cover the truth: simulated test sets of photographs with known metrics.

    table = coverage_table(SCENARIOS, n_groups=(5, 15), replications=200)
    # columns: scenario, n_groups, metric, method, coverage, width, undefined

**The data.** A test set is `n_groups` photographs with a few images each (crops, distortions; 4 to 12).
True and predicted scores on the common scale are `5.5 + 1.5 * z` of a standard bivariate normal pair
`z = b + w`: `b` is the photograph's (shared by its images, share `icc` of the variance, correlation
`rho_between`), `w` the image's own (correlation `rho_within`). So images of a photograph are
correlated, and the model may rank within photographs better than across them, as the demo's does.
Over images the pair is bivariate normal with correlation `rho = icc * rho_between + (1 - icc) *
rho_within`, which gives every metric's population value in closed form: PLCC = rho, SRCC =
6/pi asin(rho/2), KRCC = 2/pi asin(rho), RMSE = 1.5 sqrt(2 (1 - rho)), and the class metrics from
the bivariate normal's probabilities of the threshold rectangles (thresholds 5 and 6,
iqs.core.scale.assign_labels).

**Coverage** of a method is the share of simulated test sets whose interval contains the population
value; an interval that is undefined (e.g. a class absent from a left-out set) counts as a miss.
Every method is computed by the code the runs use (iqs.metrics.resample.group_intervals), from one
set of resamples per test set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from iqs.core.classes import NUM_CLASSES
from iqs.core.scale import assign_labels
from iqs.metrics.interval_rule import interval_method, range_of, scale_of
from iqs.metrics.names import BINARY_THRESHOLD
from iqs.metrics.registry import WEIGHTED
from iqs.metrics.resample import group_codes, group_intervals

SCORE_MEAN, SCORE_SD = 5.5, 1.5
THRESHOLDS = (5.0, 6.0)
# methods compared (basic is the percentile interval mirrored: no better with few groups, not shown)
COMPARED = ("percentile", "bca", "jackknife")


@dataclass(frozen=True)
class Scenario:
    name: str
    icc: float  # share of the score variance that is the photograph's
    rho_between: float  # correlation of true and predicted photograph effects
    rho_within: float  # correlation of true and predicted image deviations within a photograph
    per_group: tuple[int, int] = (4, 12)  # images per photograph, drawn uniformly

    @property
    def rho(self) -> float:
        return self.icc * self.rho_between + (1.0 - self.icc) * self.rho_within

    def population(self) -> dict[str, float]:
        """Every metric's value over the whole population of images (closed form, see the module doc)."""
        rho = self.rho
        out = {
            "plcc": rho,
            "srcc": 6.0 / math.pi * math.asin(rho / 2.0),
            "krcc": 2.0 / math.pi * math.asin(rho),
            "rmse": SCORE_SD * math.sqrt(2.0 * (1.0 - rho)),
        }
        cuts = [(-np.inf), *((t - SCORE_MEAN) / SCORE_SD for t in THRESHOLDS), np.inf]
        cm = np.array(
            [
                [_rectangle(cuts[i], cuts[i + 1], cuts[j], cuts[j + 1], rho) for j in range(3)]
                for i in range(3)
            ]
        )
        assert cm.shape == (NUM_CLASSES, NUM_CLASSES)
        tp = np.diag(cm)
        f1 = 2 * tp / (cm.sum(axis=0) + cm.sum(axis=1))
        out.update(
            acc=float(tp.sum()),
            f1_bad=float(f1[0]),
            f1_normal=float(f1[1]),
            f1_good=float(f1[2]),
            macro_f1=float(f1.mean()),
            balanced_acc=float((tp / cm.sum(axis=1)).mean()),
        )
        c = (BINARY_THRESHOLD - SCORE_MEAN) / SCORE_SD
        out["binary_acc_5"] = _rectangle(-np.inf, c, -np.inf, c, rho) + _rectangle(c, np.inf, c, np.inf, rho)
        return out

    def draw(self, n_groups: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(true score, predicted score, group) of one simulated test set."""
        sizes = rng.integers(self.per_group[0], self.per_group[1] + 1, n_groups)
        groups = np.repeat(np.arange(n_groups), sizes)
        between = _pairs(n_groups, self.rho_between, rng) * math.sqrt(self.icc)
        within = _pairs(groups.size, self.rho_within, rng) * math.sqrt(1.0 - self.icc)
        z = between[groups] + within
        return SCORE_MEAN + SCORE_SD * z[:, 0], SCORE_MEAN + SCORE_SD * z[:, 1], groups


def _pairs(n: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, 2))
    return np.column_stack([x[:, 0], rho * x[:, 0] + math.sqrt(1.0 - rho * rho) * x[:, 1]])


def _rectangle(a0: float, a1: float, b0: float, b1: float, rho: float) -> float:
    """P(a0 < X <= a1, b0 < Y <= b1) for a standard bivariate normal pair with correlation rho."""
    dist = stats.multivariate_normal(mean=[0.0, 0.0], cov=[[1.0, rho], [rho, 1.0]])

    def cdf(x: float, y: float) -> float:
        if x == -np.inf or y == -np.inf:
            return 0.0
        if x == np.inf and y == np.inf:
            return 1.0
        if x == np.inf:
            return float(stats.norm.cdf(y))
        if y == np.inf:
            return float(stats.norm.cdf(x))
        return float(dist.cdf([x, y]))

    return cdf(a1, b1) - cdf(a0, b1) - cdf(a1, b0) + cdf(a0, b0)


# Scenarios the rule is validated on: the worst coverage over them counts.
SCENARIOS = (
    # the demo's kind: distortions drive the score within a photograph, the model ranks them well and
    # the photographs themselves poorly
    Scenario("within-driven", icc=0.3, rho_between=0.3, rho_within=0.8),
    # content drives the score: most variance between photographs, ranked fairly well
    Scenario("content-driven", icc=0.6, rho_between=0.7, rho_within=0.5),
    # a strong model: high correlation everywhere (intervals near the bound of 1)
    Scenario("strong", icc=0.5, rho_between=0.85, rho_within=0.9),
)


def simulate(
    scenario: Scenario,
    n_groups: int,
    replications: int,
    metrics: Sequence[str] = tuple(WEIGHTED),
    methods: Sequence[str] = COMPARED,
    *,
    n_resamples: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Coverage, mean width and undefined share of each (metric, method) over simulated test sets."""
    truth = scenario.population()
    names = list(metrics)
    target = np.array([truth[m] for m in names])
    limits = np.array([range_of(m) for m in names])  # intervals are clipped to the range, as in a run
    rng = np.random.default_rng([seed, n_groups, int(1000 * scenario.rho)])
    hits = {m: np.zeros(len(names)) for m in methods}
    width = {m: np.zeros(len(names)) for m in methods}
    undefined = {m: np.zeros(len(names)) for m in methods}
    for rep in range(replications):
        true, pred, groups = scenario.draw(n_groups, rng)
        columns = {
            "score": (true, pred),
            "class": (assign_labels(true, *THRESHOLDS), assign_labels(pred, *THRESHOLDS)),
        }
        codes, n = group_codes(groups, len(true))

        def stat(w: np.ndarray, cols: dict = columns) -> np.ndarray:
            with np.errstate(all="ignore"):
                return np.stack([WEIGHTED[m][1](*cols[WEIGHTED[m][0]], w) for m in names])

        got = group_intervals(
            stat,
            codes,
            n,
            methods,
            scales=[scale_of(m) for m in names],
            n_resamples=n_resamples,
            confidence=confidence,
            seed=rep,
        )
        for method in methods:
            low, high = (np.clip(b, limits[:, 0], limits[:, 1]) for b in got.bounds[method])
            ok = np.isfinite(low) & np.isfinite(high)
            hits[method] += ok & (low <= target) & (target <= high)
            width[method] += np.where(ok, high - low, 0.0)
            undefined[method] += ~ok
    rows = []
    for method in methods:
        for i, m in enumerate(names):
            defined = replications - undefined[method][i]
            rows.append(
                {
                    "scenario": scenario.name,
                    "n_groups": n_groups,
                    "metric": m,
                    "method": method,
                    "coverage": hits[method][i] / replications,
                    "width": width[method][i] / defined if defined else float("nan"),
                    "undefined": undefined[method][i] / replications,
                }
            )
    return pd.DataFrame(rows)


def coverage_table(
    scenarios: Sequence[Scenario] = SCENARIOS,
    n_groups: Sequence[int] = (3, 5, 10, 15, 30, 100),
    replications: int | dict[int, int] = 200,
    metrics: Sequence[str] = tuple(WEIGHTED),
    methods: Sequence[str] = COMPARED,
    *,
    n_resamples: int = 500,
    seed: int = 0,
    workers: int = 1,
) -> pd.DataFrame:
    """`simulate` over scenarios and sizes; `replications` may differ per size ({n_groups: reps}).

    Each (scenario, size) draws from its own seeded stream, so `workers` > 1 (processes) gives the
    same table, sooner.
    """
    cells = [
        (sc, g, replications[g] if isinstance(replications, dict) else replications)
        for g in n_groups
        for sc in scenarios
    ]

    def run(sc: Scenario, g: int, reps: int) -> pd.DataFrame:
        return simulate(sc, g, reps, metrics, methods, n_resamples=n_resamples, seed=seed)

    if workers <= 1:
        return pd.concat([run(*cell) for cell in cells], ignore_index=True)
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        futures = [
            pool.submit(simulate, sc, g, reps, metrics, methods, n_resamples=n_resamples, seed=seed)
            for sc, g, reps in cells
        ]
        return pd.concat([f.result() for f in futures], ignore_index=True)


def rule_coverage(by_size: dict[int, dict[str, dict[str, float]]]) -> dict[str, float | str]:
    """`ci_coverage_<n>groups_<metric>`: the coverage of the method iqs.metrics.interval_rule picks.

    `by_size`: {n_groups: {metric: {method: coverage}}}; where the rule gives no interval the value is a
    string saying so.
    """
    out: dict[str, float | str] = {}
    for g, table in by_size.items():
        for metric, by_method in table.items():
            chosen = interval_method(metric, int(g))
            key = f"ci_coverage_{int(g)}groups_{metric}"
            out[key] = "no interval (too few groups)" if chosen is None else float(by_method[chosen])
    return out


__all__ = [
    "COMPARED",
    "SCENARIOS",
    "Scenario",
    "coverage_table",
    "rule_coverage",
    "simulate",
]
