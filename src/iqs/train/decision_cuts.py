"""Learned decision cuts: where to cut the model's predicted score into bad / normal / good.

The label thresholds (`thresholds=t5_6`) define what the classes MEAN; nothing says that cutting the
model's prediction at the same values reproduces them best (a regression shrinks towards the mean, and a
classification or ordinal head's score lives on 0..2). After fitting, `tune_cuts` picks two cuts on the
VALIDATION split's predicted scores only:

- `objective=macro_f1`: the pair maximising macro-F1 against the run's labels, by exact search over every
  midpoint between consecutive distinct predicted scores (plus "below all" / "above all", which leave a
  class empty). Prefix counts make each pair O(1); ties go to the lowest cuts.
- `objective=target`: cuts at the predicted-score quantiles that give the class proportions `target`
  (e.g. [0.2, 0.5, 0.3]); labels are not used. A product choice: a fixed share of photos per class.

`per_source=true` tunes one pair per source (each source's own val rows); the pooled pair is always
tuned too, and it is the one an export can bake in (`iqs_meta["decision_cuts"]`: the digiKam graph does not
know which source a photo comes from). Cuts apply as the labels do: score <= t1 bad, <= t2 normal, else good
(`iqs.core.scale.assign_labels`).

**Star ratings** (`rating_cuts`, four cuts: stars = 1 + the number of cuts below the score) are learned on
the same validation scores. With `rating_shares` (five shares, e.g. the user's own star shares: see
iqs.train.personal) they sit at the predicted-score quantiles that give those shares, as `target` does for
the classes. Without, they nest inside the class cuts, so that stars and pick label agree under digiKam's
default `rating_classes: [1, 3]` (1 star bad, 2-3 normal, 4-5 good): cuts 1 and 3 are the class cuts, cut 2
the median validation score among the photos classed normal, cut 4 among those classed good.

**Burst margin** (`burst_margin`): `iqs predict --bursts` rejects a frame of a burst when its score is below
the burst's best by more than this. Learned on validation pairs of one group (a photograph's crops and
distortions, a burst): the smallest predicted-score difference beyond which the better-predicted image
is truly the better one in at least `burst_precision` of the pairs (ties in truth left out), so a frame is
rejected only where the model is that sure. None when no difference reaches it (then nothing is rejected).

With `bake`, the pooled class cuts, the rating cuts and the burst margin are written into the checkpoint's
`iqs_meta` (`decision_cuts`, `rating_cuts`, `burst_margin`); the export carries them to `iqs predict`.

MLflow metric names cannot hold '@', so the tuned results are `test/<ds>/<metric>_tuned` (acc, macro_f1,
balanced_acc); the untuned `test/<ds>/<metric>` are the head's own classes (label cuts for score heads).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from iqs.core.scale import CLASS_NAMES, assign_labels
from iqs.metrics.names import ALL
from iqs.metrics.registry import TUNED_METRICS, metric

log = logging.getLogger(__name__)

OBJECTIVES = ("macro_f1", "target")
META_KEY = "decision_cuts"
RATING_META_KEY = "rating_cuts"
MARGIN_META_KEY = "burst_margin"
STARS = 5
MAX_GROUP_PAIRS = 2000  # images per group used for the burst margin (a large group is subsampled)
# Candidate cuts beyond the scores' range leave the bad (or good) class empty; the margin keeps them clear
# of any score in float32 too.
_EDGE_MARGIN = 1.0


@dataclass(frozen=True)
class CutsConfig:
    """The `decision_cuts` config block (conf/train.yaml)."""

    enabled: bool = True
    objective: str = "macro_f1"
    target: tuple[float, float, float] | None = None
    per_source: bool = False
    max_candidates: int = 4096
    bake: bool = False
    ratings: bool = True  # also learn the four star-rating cuts (module docstring)
    rating_shares: tuple[float, ...] | None = None  # five star shares (1..5); None: nested in the class cuts
    burst_precision: float | None = 0.9  # the burst margin's precision; None: no margin learned

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any] | None) -> CutsConfig:
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
        if unknown:
            raise KeyError(
                f"decision_cuts: unknown key(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}"
            )
        tuples = {k: None if cfg.get(k) is None else tuple(cfg[k]) for k in ("target", "rating_shares")}
        out = cls(**{**cfg, **tuples})
        shares = out.rating_shares
        if shares is not None and (
            len(shares) != STARS or min(shares) < 0 or not math.isclose(sum(shares), 1.0)
        ):
            raise ValueError(
                f"decision_cuts.rating_shares needs {STARS} shares (1..5 stars) summing to 1, "
                f"e.g. [0.1, 0.2, 0.4, 0.2, 0.1]; got {list(shares)}"
            )
        precision = out.burst_precision
        if precision is not None and not 0.5 <= float(precision) < 1.0:
            raise ValueError(f"decision_cuts.burst_precision must be in [0.5, 1) or null, got {precision}")
        if out.objective not in OBJECTIVES:
            raise ValueError(f"decision_cuts.objective must be one of {OBJECTIVES}, got {out.objective!r}")
        if out.objective == "target":
            t = out.target
            if t is None or len(t) != len(CLASS_NAMES) or min(t) < 0 or not math.isclose(sum(t), 1.0):
                raise ValueError(
                    f"decision_cuts.target needs {len(CLASS_NAMES)} proportions ({', '.join(CLASS_NAMES)}) "
                    f"summing to 1, e.g. [0.2, 0.5, 0.3]; got {t}"
                )
        if int(out.max_candidates) < 2:
            raise ValueError(f"decision_cuts.max_candidates must be >= 2, got {out.max_candidates}")
        return out


def _boundaries(sorted_score: np.ndarray, max_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut positions p (the first p sorted samples are <= the cut) and the cut values, edges included."""
    n = len(sorted_score)
    # position after the last copy of each distinct value, except the last value (that is the upper edge)
    ends = np.flatnonzero(np.diff(sorted_score) > 0) + 1
    if len(ends) > max_candidates:
        # more distinct scores than candidates: evenly spaced (by rank) boundaries, still at midpoints
        ends = np.unique(ends[np.linspace(0, len(ends) - 1, max_candidates).round().astype(int)])
    values = (sorted_score[ends - 1] + sorted_score[ends]) / 2
    positions = np.concatenate([[0], ends, [n]])
    values = np.concatenate([[sorted_score[0] - _EDGE_MARGIN], values, [sorted_score[-1] + _EDGE_MARGIN]])
    return positions, values


def search_macro_f1(
    score: np.ndarray, label: np.ndarray, max_candidates: int = 4096
) -> tuple[float, float, float]:
    """(t1, t2, macro_f1): the cuts maximising macro-F1 of assign_labels(score, t1, t2) against `label`.

    macro-F1 is sklearn's (mean over the classes present in the truth or the prediction). Exact over all
    midpoints when the scores have at most `max_candidates` distinct values. Hand-rolled because no library
    searches two ordered thresholds for a multiclass F1; the tests check it against sklearn by brute force.
    """
    score = np.asarray(score, dtype=np.float64)
    label = np.asarray(label, dtype=np.int64)
    if score.shape != label.shape or score.ndim != 1 or len(score) < 2:
        raise ValueError(f"need >= 2 scores and as many labels, got {score.shape} and {label.shape}")
    if not np.isfinite(score).all():
        raise ValueError("cannot tune cuts on non-finite predicted scores")
    order = np.argsort(score, kind="stable")
    s, y = score[order], label[order]
    n = len(s)
    pos, val = _boundaries(s, int(max_candidates))
    # prefix[c][p] = samples of class c among the first p sorted ones
    prefix = np.stack([np.concatenate([[0], np.cumsum(y == c)]) for c in range(3)])
    true = prefix[:, -1].astype(np.float64)
    best = (-1.0, 0, 1)
    for i in range(len(pos) - 1):
        pi, pj = pos[i], pos[i + 1 :]
        tp = np.stack(
            [
                np.full(len(pj), prefix[0, pi]),
                prefix[1, pj] - prefix[1, pi],
                true[2] - prefix[2, pj],
            ]
        ).astype(np.float64)
        pred = np.stack([np.full(len(pj), pi), pj - pi, n - pj]).astype(np.float64)
        denom = true[:, None] + pred
        present = denom > 0
        f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=present)
        macro = f1.sum(0) / present.sum(0)
        j = int(np.argmax(macro))
        if macro[j] > best[0] + 1e-12:
            best = (float(macro[j]), i, i + 1 + j)
    f1, i, j = best
    return float(val[i]), float(val[j]), f1


def cuts_for_proportions(score: np.ndarray, target: Sequence[float]) -> tuple[float, float]:
    """Cuts at midpoints whose bad / normal / good shares of `score` come closest to `target`."""
    s = np.sort(np.asarray(score, dtype=np.float64))
    if len(s) < 2 or not np.isfinite(s).all():
        raise ValueError("need >= 2 finite predicted scores to place proportion cuts")
    pos, val = _boundaries(s, len(s))
    n = len(s)
    want = np.cumsum(np.asarray(target, dtype=np.float64))[:2] * n
    i = int(np.argmin(np.abs(pos - want[0])))
    rest = np.arange(i + 1, len(pos))
    if len(rest) == 0:  # the first cut took the upper edge: step it back one
        i, rest = i - 1, np.array([i])
    j = int(rest[np.argmin(np.abs(pos[rest] - want[1]))])
    return float(val[i]), float(val[j])


def quantile_cuts(score: np.ndarray, shares: Sequence[float]) -> list[float]:
    """len(shares) - 1 non-decreasing cuts at midpoints between sorted scores whose class shares come
    closest to `shares` (class k: cut[k-1] < score <= cut[k]); a share of 0 leaves its class empty."""
    s = np.sort(np.asarray(score, dtype=np.float64))
    if len(s) < 2 or not np.isfinite(s).all():
        raise ValueError("need >= 2 finite predicted scores to place proportion cuts")
    pos, val = _boundaries(s, len(s))
    want = np.cumsum(np.asarray(shares, dtype=np.float64))[:-1] * len(s)
    cuts, lo = [], 0
    for w in want:
        i = lo + int(np.argmin(np.abs(pos[lo:] - w)))
        cuts.append(float(val[i]))
        lo = i
    return cuts


def rating_cuts(
    score: np.ndarray, class_cuts: tuple[float, float], shares: Sequence[float] | None = None
) -> list[float]:
    """The four star cuts on validation scores (module docstring): at the quantiles of `shares`, or the
    class cuts with each of the normal and good ranges split at its median."""
    score = np.asarray(score, dtype=np.float64)
    if shares is not None:
        return quantile_cuts(score, shares)
    t1, t2 = (float(t) for t in class_cuts)

    def median(lo: float, hi: float) -> float:
        inside = score[(score > lo) & (score <= hi)]
        return float(np.median(inside)) if len(inside) else (lo + hi) / 2 if np.isfinite(hi) else lo

    return [t1, median(t1, t2), t2, median(t2, np.inf)]


def burst_margin(val: pd.DataFrame, precision: float, seed: int = 0) -> float | None:
    """The smallest predicted-score gap d such that, over the validation pairs of one group whose truth
    differs, pairs predicted more than d apart are ordered right in >= `precision` of cases (module
    docstring). Needs `group`, `score` (truth) and `pred_score`; None when no gap reaches it."""
    rng = np.random.default_rng(seed)
    gaps, right = [], []
    for _, part in val.groupby("group", sort=False):
        if len(part) < 2:
            continue
        if len(part) > MAX_GROUP_PAIRS:
            part = part.iloc[rng.choice(len(part), MAX_GROUP_PAIRS, replace=False)]
        t, p = part["score"].to_numpy(np.float64), part["pred_score"].to_numpy(np.float64)
        i, j = np.triu_indices(len(part), 1)
        dt, dp = t[i] - t[j], p[i] - p[j]
        keep = dt != 0
        gaps.append(np.abs(dp[keep]))
        right.append(np.sign(dp[keep]) == np.sign(dt[keep]))
    if not gaps:
        return None
    gap, ok = np.concatenate(gaps), np.concatenate(right)
    order = np.argsort(-gap, kind="stable")  # from the widest gap down: precision of "gap > d" at each d
    gap, ok = gap[order], ok[order]
    prec = np.cumsum(ok) / np.arange(1, len(ok) + 1)
    # candidate d = the next smaller gap: pairs above it are the prefix; keep the smallest d that holds
    good = np.flatnonzero(prec >= precision)
    if not len(good):
        return None
    # the longest prefix whose precision holds; d sits just below its last gap (ties at d are not rejected)
    k = int(good.max())
    below = gap[k + 1] if k + 1 < len(gap) else 0.0
    return float((gap[k] + below) / 2)


def tune_cuts(val: pd.DataFrame, cfg: CutsConfig) -> dict[str, tuple[float, float]]:
    """Cuts from the validation predictions (`dataset`, `label`, `pred_score`): `all` and, with
    `per_source`, one pair per source. The frame must hold validation rows only."""

    def one(part: pd.DataFrame) -> tuple[float, float]:
        if cfg.objective == "target":
            return cuts_for_proportions(part["pred_score"].to_numpy(), cfg.target or ())
        t1, t2, _ = search_macro_f1(
            part["pred_score"].to_numpy(), part["label"].to_numpy(), cfg.max_candidates
        )
        return t1, t2

    cuts = {ALL: one(val)}
    if cfg.per_source:
        for ds, part in val.groupby("dataset", sort=False):
            if part["pred_score"].nunique() < 2:
                log.warning("decision cuts: %s has < 2 distinct val scores; it uses the pooled cuts", ds)
                continue
            cuts[str(ds)] = one(part)
    return cuts


def tuned_classes(frame: pd.DataFrame, cuts: Mapping[str, tuple[float, float]]) -> np.ndarray:
    """Each row's class under its source's cuts (the pooled `all` cuts for sources without their own)."""
    out = np.empty(len(frame), dtype=np.int64)
    datasets = frame["dataset"].astype(str).to_numpy()
    score = frame["pred_score"].to_numpy(np.float64)
    for ds in np.unique(datasets):
        mask = datasets == ds
        out[mask] = assign_labels(score[mask], *cuts.get(ds, cuts[ALL]))
    return out


def class_metrics(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The `tuned` metrics of iqs.metrics.registry (acc, macro_f1, balanced_acc: sklearn's definitions)."""
    if len(true) == 0:
        return dict.fromkeys(TUNED_METRICS, float("nan"))
    return {name: metric(name).value(true, pred) for name in TUNED_METRICS}


def tuned_metrics(
    stage: str, frame: pd.DataFrame, cuts: Mapping[str, tuple[float, float]], suffix: str = "_tuned"
) -> dict[str, float]:
    """`<stage>/<ds>/<metric><suffix>` for every source and `all` (rows classed with their own cuts)."""
    pred = tuned_classes(frame, cuts)
    true = frame["label"].to_numpy(np.int64)
    datasets = frame["dataset"].astype(str).to_numpy()
    out: dict[str, float] = {}
    for ds in [*pd.unique(datasets), ALL]:
        mask = np.ones(len(frame), bool) if ds == ALL else datasets == ds
        for k, v in class_metrics(true[mask], pred[mask]).items():
            out[f"{stage}/{ds}/{k}{suffix}"] = v
    return out


def cut_metrics(cuts: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    return {
        f"cuts/{ds}/{name}": float(v)
        for ds, pair in cuts.items()
        for name, v in zip(("t1", "t2"), pair, strict=True)
    }


@torch.no_grad()
def val_predictions(model: torch.nn.Module, loader: Any, table: pd.DataFrame) -> pd.DataFrame:
    """dataset, label, pred_score of every row the (validation) loader serves, in eval mode."""
    was_training = model.training
    model.eval()
    # the trainer may leave the model on its accelerator
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    rows, scores = [], []
    for batch in loader:
        if "features" in batch:
            out = model.forward_head(batch["features"].to(device))
        else:
            out = model(batch["image"].to(device))
        scores.append(out["score"].float().cpu())
        rows.append(batch["row"].cpu())
    model.train(was_training)
    idx = torch.cat(rows).numpy()
    part = table.iloc[idx]
    out = pd.DataFrame(
        {
            "dataset": part["dataset"].astype(str).to_numpy(),
            "label": part["label"].to_numpy(np.int64),
            "pred_score": torch.cat(scores).double().numpy(),
        }
    )
    for column in ("score", "group"):  # every SampleTable has them; the burst margin reads them
        if column in part:
            out[column] = part[column].to_numpy()
    return out


def bake_into_checkpoint(
    path: str | Path,
    cuts: tuple[float, float],
    meta_key: str = "iqs_meta",
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Record the pooled cuts in the checkpoint's `iqs_meta` so that export / predict rebuild the model
    with them (`QualityModel` then classes every score through these cuts); `extra`: the rating cuts and
    the burst margin, which only `iqs predict` reads."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt[meta_key] = {**ckpt[meta_key], META_KEY: [float(cuts[0]), float(cuts[1])], **dict(extra or {})}
    torch.save(ckpt, path)


def culling_meta(val: pd.DataFrame, pooled: tuple[float, float], cfg: CutsConfig) -> dict[str, Any]:
    """`rating_cuts` and `burst_margin` learned on the validation predictions (module docstring)."""
    out: dict[str, Any] = {}
    if cfg.ratings:
        out[RATING_META_KEY] = rating_cuts(val["pred_score"].to_numpy(), pooled, cfg.rating_shares)
    if cfg.burst_precision is not None and {"score", "group"} <= set(val.columns):
        out[MARGIN_META_KEY] = burst_margin(val, float(cfg.burst_precision))
    return out


def culling_metrics(meta: Mapping[str, Any]) -> dict[str, float]:
    out = {f"cuts/all/r{i + 1}": float(c) for i, c in enumerate(meta.get(RATING_META_KEY) or [])}
    if meta.get(MARGIN_META_KEY) is not None:
        out["cuts/all/burst_margin"] = float(meta[MARGIN_META_KEY])
    return out


def tune_and_evaluate(
    cfg: CutsConfig,
    model: torch.nn.Module,
    datamodule: Any,
    predictions: pd.DataFrame,
    checkpoint: str | Path | None = None,
) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """The run's hook: tune on the validation split, evaluate on `predictions` (the test rows), bake.

    Adds `pred_class_tuned` to `predictions`. Returns the cuts and the metrics to log: `cuts/<ds>/t1|t2`,
    `val/<ds>/<metric>_tuned` (the tuning objective, optimistic by construction) and `test/<ds>/<metric>_tuned`
    (with `per_source`, also `test/<ds>/<metric>_tuned_pooled` under the pooled cuts an export bakes).
    """
    val = val_predictions(model, datamodule.val_dataloader(), datamodule.table)
    cuts = tune_cuts(val, cfg)
    log.info("decision cuts (%s%s): %s", cfg.objective, ", per source" if cfg.per_source else "", cuts)
    culling = culling_meta(val, cuts[ALL], cfg)
    log.info("rating cuts and burst margin: %s", culling)
    metrics = {**cut_metrics(cuts), **culling_metrics(culling), **tuned_metrics("val", val, cuts)}
    if len(predictions):
        metrics.update(tuned_metrics("test", predictions, cuts))
        predictions["pred_class_tuned"] = tuned_classes(predictions, cuts)
        if cfg.per_source:  # what an export can bake: the pooled pair for every source
            pooled = {ALL: cuts[ALL]}
            metrics.update(tuned_metrics("test", predictions, pooled, suffix="_tuned_pooled"))
            predictions["pred_class_tuned_pooled"] = tuned_classes(predictions, pooled)
    if cfg.bake and checkpoint:
        bake_into_checkpoint(checkpoint, cuts[ALL], extra=culling)
        log.info("baked the pooled cuts %s and %s into %s", cuts[ALL], culling, checkpoint)
    return cuts, metrics
