"""Which 95% interval each metric gets at a given number of test groups, and when it gets none.

    interval_method("srcc", 15)   # -> "jackknife"
    interval_method("srcc", 3)    # -> None: too few groups, log/print `too_few_text(3)` instead

The one place this rule lives: the bootstrap (iqs.metrics.bootstrap), the logged metrics, `make train`'s
table, `iqs compare` (tables, paired differences, plots) and pooled CV all ask it.

**Evidence.** `python bench/run.py --only coverage_bench` draws grouped data with a known population
value (iqs.metrics.coverage: photographs with between- and within-photograph correlation) and measures
how often each method's 95% interval covers it at 3, 5, 10, 15, 30 and 100 groups; `bench/results.json`
keeps the table (`ci_coverage_<n>groups`). The jackknife-t covered closest to 95% at every size up to
30 groups and for every metric (SRCC 0.94-0.97, PLCC 0.93-0.96 from 5 groups); the percentile bootstrap
used before covered SRCC 0.84 at 3 groups, 0.89 at 5, 0.92 at 15 and PLCC less, BCa less still. A metric gets an interval from the first
simulated size at which the jackknife covers at least `MIN_COVERAGE` there and at every larger size,
and never below `FLOOR` groups.

Methods (iqs.metrics.resample): `percentile` and `bca` (scipy.stats.bootstrap over groups), and
`jackknife`: leave-one-group-out values on a variance-stabilising scale (Fisher z for correlations, log
for RMSE, logit for accuracy and F1), estimate +- t(G-1) * jackknife SE, mapped back. The percentile bootstrap under-covers with
few groups (a resample of 5 photographs repeats some and loses the spread between photographs); the
jackknife-t widens with the t quantile and covers. The jackknife costs one metric evaluation per group,
so very large test sets (AVA's 20k) keep the percentile bootstrap (`LARGE`).
"""

from __future__ import annotations

import math

from iqs.metrics import registry

# the least coverage (of nominal 95%) the rule's method must reach in the simulation at a size and every
# larger simulated size for the metric to get an interval there
MIN_COVERAGE = 0.90
# never fewer groups than this: at 3 groups the jackknife's covering intervals span most of the metric's
# range (SRCC: mean width 1.3 of 2) on an SE with 2 degrees of freedom, and F1 of `normal` falls to 0.84
FLOOR = 5
# sizes simulated by bench/coverage_bench.py
SIMULATED_GROUPS = (3, 5, 10, 15, 30, 100)
# From this many groups on, the percentile bootstrap: the jackknife costs one evaluation per group (20k on
# AVA's test list); KonIQ's and SPAQ's test sets (~2k images, one group each) stay on the jackknife.
# Beyond the simulated sizes: at 100 groups the percentile interval covered 0.92-0.96 and it converges.
LARGE = 5000
# metric -> ((from this many groups, method), ...) in increasing order; fewer than the first: no interval.
# Each metric's minimum is its record's `min_groups` (iqs.metrics.registry), read off bench/results.json
# (coverage_bench, `ci_coverage_<n>groups`); tests/test_intervals.py checks that every minimum is
# max(FLOOR, the first simulated size from which the jackknife covers MIN_COVERAGE).
RULE: dict[str, tuple[tuple[int, str], ...]] = {
    m.name: ((max(FLOOR, m.min_groups or FLOOR), "jackknife"), (LARGE, "percentile"))
    for m in registry.all_metrics()
    if m.weighted is not None
}
# a metric outside the table (a custom WeightedMetric, a paired difference of one): the strictest entry
STRICTEST = max(RULE.values(), key=lambda steps: steps[0][0])

# where the jackknife works: the scale it is symmetric on (Fisher z for correlations, log for RMSE, logit for
# the shares in [0, 1]) and the metric's range (the interval is clipped to it): each record's
# `interval_scale` and `value_range`
JACKKNIFE_SCALE = {name: registry.metric(name).interval_scale for name in RULE}
RANGE = {name: registry.metric(name).value_range for name in RULE}

# logged as `<stage>/<ds>/<metric>_ci_too_few_groups` = 1 instead of `_lo`/`_hi`
TOO_FEW_SUFFIX = "_ci_too_few_groups"


def steps_for(metric: str) -> tuple[tuple[int, str], ...]:
    return RULE.get(metric, STRICTEST)


def min_groups(metric: str) -> int:
    """The fewest test groups at which `metric` gets an interval."""
    return steps_for(metric)[0][0]


def interval_method(metric: str, n_groups: int) -> str | None:
    """The method for `metric` on `n_groups` groups; None: too few groups for an honest interval."""
    chosen = None
    for start, method in steps_for(metric):
        if n_groups >= start:
            chosen = method
    return chosen


def too_few_text(n_groups: int) -> str:
    """What is shown instead of an interval."""
    return f"n={int(n_groups)} groups: too few for an interval; use data.folds=k"


def scale_of(metric: str) -> str:
    """The jackknife's scale for `metric`; identity for a metric outside RULE (e.g. a custom one)."""
    return JACKKNIFE_SCALE.get(metric, "identity")


def range_of(metric: str) -> tuple[float, float]:
    """Where the metric's values lie (an interval is clipped to it); unbounded for a metric outside RULE."""
    return RANGE.get(metric, (-math.inf, math.inf))
