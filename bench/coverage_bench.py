"""Coverage of the 95% intervals on simulated test sets of 3 to 100 photographs (iqs.metrics.coverage).

Each simulated test set has a known population value of every metric; a method's coverage is the share
of test sets whose interval contains it (nominal: 0.95). Three scenarios (iqs.metrics.coverage.SCENARIOS:
within-driven like the demo, content-driven, a strong model) are pooled: `ci_coverage_<n>groups` is
{metric: {method: coverage over every simulated test set of that size}}, and
`ci_coverage_<n>groups_<metric>` the coverage of the method iqs.metrics.interval_rule picks there (a
string where the rule gives no interval). `ci_coverage_worst_scenario` keeps the lowest scenario's
coverage, `ci_width_<n>groups` the mean widths. Monte Carlo error of a pooled coverage near 0.95 is
about sqrt(0.05 * 0.95 / replications): 0.008 with 3 x 250 test sets, 0.011 at 100 groups (3 x 120).
"""

from __future__ import annotations

import os
import time

from iqs.metrics.coverage import COMPARED, SCENARIOS, coverage_table, rule_coverage
from iqs.metrics.interval_rule import SIMULATED_GROUPS

# replications per scenario and size: fewer at 100 groups, where one test set costs ~20x one of 5
REPLICATIONS = {3: 250, 5: 250, 10: 250, 15: 250, 30: 250, 100: 120}
N_RESAMPLES = 400  # bootstrap resamples per simulated test set (a run uses 1000)


def run(work: str) -> dict:
    del work  # nothing written: the simulation lives in memory
    started = time.perf_counter()
    # one process per core: each (scenario, size) has its own seeded stream, so the table is the same
    table = coverage_table(
        SCENARIOS, SIMULATED_GROUPS, REPLICATIONS, n_resamples=N_RESAMPLES, workers=os.cpu_count() or 1
    )
    table["hits"] = table["coverage"] * table["n_groups"].map(REPLICATIONS)
    pooled = table.groupby(["n_groups", "metric", "method"], as_index=False).agg(
        hits=("hits", "sum"), width=("width", "mean"), undefined=("undefined", "mean")
    )
    pooled["coverage"] = pooled["hits"] / (pooled["n_groups"].map(REPLICATIONS) * len(SCENARIOS))
    out: dict = {
        "settings": {
            "replications_per_scenario": {str(k): v for k, v in REPLICATIONS.items()},
            "scenarios": {
                s.name: {"icc": s.icc, "rho_between": s.rho_between, "rho_within": s.rho_within, "rho": s.rho}
                for s in SCENARIOS
            },
            "n_resamples": N_RESAMPLES,
            "methods": list(COMPARED),
        },
        "ci_coverage_worst_scenario": {},
    }
    for g, part in pooled.groupby("n_groups"):
        key = f"ci_coverage_{int(g)}groups"
        out[key] = {
            m: {r.method: round(float(r.coverage), 3) for r in rows.itertuples()}
            for m, rows in part.groupby("metric")
        }
        out[f"ci_width_{int(g)}groups"] = {
            m: {r.method: round(float(r.width), 3) for r in rows.itertuples()}
            for m, rows in part.groupby("metric")
        }
        worst = table[table["n_groups"] == g].groupby(["metric", "method"])["coverage"].min()
        out["ci_coverage_worst_scenario"][key] = {
            m: {meth: round(float(v), 3) for (mm, meth), v in worst.items() if mm == m} for m in out[key]
        }
    out.update(rule_coverage({n: out[f"ci_coverage_{n}groups"] for n in SIMULATED_GROUPS}))
    out["coverage_seconds"] = round(time.perf_counter() - started, 1)
    return out
