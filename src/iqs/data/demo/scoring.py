"""Scores for the demo: a latent quality per image, shaped per source, then votes from a rater panel.

The latent quality is `1 - degradation(distortion, level)` plus a small offset per reference crop
(content that looks a little better or worse) and a smaller reference x distortion interaction
(a texture hides noise better than a sky). Severity therefore dominates, as in TID2013/KADID,
while the offsets keep the task from being a lookup of the distortion level.

A source's skew has two causes, as in the real datasets. First, what it holds: each source draws
distortion levels from its own mix (`LEVEL_MIX`): the AVA-like one mostly mild-to-moderate damage,
the KonIQ-like one mostly good photos with a thin low tail, the SPAQ-like one every level alike.
Second, how its raters use the scale: a normal-score (rank) transform maps the latent quality into a
target shape, so that the order of images is kept and the distribution of image means looks like
the real dataset's: AVA concentrated around 5.4, KonIQ-10k mid-high with a long low tail, SPAQ broad.
Because the content mix already carries most of each skew, the three rank maps nearly agree on the
common scale: a given damage gets about the same common score in every source (the latent quality
orders the pooled means at about 0.96 Spearman; with one content mix for all it was 0.92).
Individual raters then vote: image mean + rater bias + per-vote noise, rounded and clipped to the
source's vote levels, so the files carry real vote histograms (and rater effects, for KonIQ's z-scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from iqs.data.demo.distortions import DISTORTIONS

PRISTINE = "pristine"


@dataclass(frozen=True)
class Item:
    """One image of one source: a reference crop with one distortion at one level (0 = pristine)."""

    ref: int  # index into the reference list
    distortion: str  # a DISTORTIONS name, or PRISTINE
    level: int


@dataclass(frozen=True)
class Panel:
    """How a source collected its votes, and the skew of its image means (native units)."""

    vote_levels: tuple[float, ...]
    votes_per_image: tuple[int, int]  # inclusive range
    noise_sd: float  # per-vote disagreement
    bias_sd: float  # per-rater leniency / severity
    pool: int  # raters in the panel
    mean: float  # target mean of the image means
    sd: float  # target standard deviation of the image means
    shape: stats.rv_continuous  # target shape of the image means (standardised below)


PANELS: dict[str, Panel] = {
    # AVA: DPChallenge members vote 1..10; image means ~5.45 +- 0.75 (measured on the official test
    # list), with per-image vote sd ~1.5 and 80-530 votes per image
    "ava": Panel(tuple(range(1, 11)), (100, 250), 1.35, 0.45, 1500, 5.45, 0.72, stats.norm),
    # KonIQ-10k: crowd workers vote 1..5, ~100-120 votes, vote SD ~0.57; MOS skews mid-high
    "koniq": Panel(tuple(range(1, 6)), (100, 125), 0.48, 0.22, 1400, 3.2, 0.52, stats.skewnorm(-4.0)),
    # SPAQ: a 0..100 slider, few raters per image, MOS broad (mean ~50, sd ~21)
    "spaq": Panel(tuple(range(0, 101)), (15, 15), 11.0, 5.0, 60, 50.0, 21.0, stats.beta(1.6, 1.6)),
}


# Relative frequency of distortion levels 1..5 per source (levels are drawn without replacement).
LEVEL_MIX: dict[str, tuple[float, ...]] = {
    "ava": (2.0, 4.0, 4.0, 2.0, 0.5),  # photo-contest entries: rarely ruined, rarely flawless
    "koniq": (6.0, 3.0, 1.5, 0.8, 0.5),  # in-the-wild photos kept for quality: mostly fine, a low tail
    "spaq": (1.0, 1.0, 1.0, 1.0, 1.0),  # phone shots taken to span the range
}


def latent_quality(items: list[Item], n_refs: int, seed: int) -> np.ndarray:
    """Latent quality in about [0, 1] for each item; the same (ref, distortion, level) gets the same
    value in every source."""
    rng = np.random.default_rng([seed, 3])
    ref_offset = rng.normal(0.0, 0.04, n_refs)
    names = DISTORTIONS.names()
    interaction = rng.normal(0.0, 0.025, (n_refs, len(names)))
    q = np.empty(len(items))
    for i, it in enumerate(items):
        q[i] = 1.0 + ref_offset[it.ref]
        if it.level:
            d = DISTORTIONS.get(it.distortion)
            q[i] += -d.degradation(it.level) + interaction[it.ref, names.index(it.distortion)]
    return q


def shape_means(latent: np.ndarray, panel: Panel) -> np.ndarray:
    """Monotone map of the latent quality onto the panel's skew (normal-score transform)."""
    u = (stats.rankdata(latent) - 0.5) / len(latent)
    z = panel.shape.ppf(u)
    z = (z - panel.shape.mean()) / panel.shape.std()
    return panel.mean + panel.sd * z


@dataclass
class Votes:
    rater: np.ndarray  # (V,) rater index of each vote
    image: np.ndarray  # (V,) image index of each vote
    value: np.ndarray  # (V,) vote on the panel's levels

    def counts(self, n_images: int, levels: tuple[float, ...]) -> np.ndarray:
        """(N, L) histogram of votes over the vote levels."""
        level_index = np.searchsorted(np.asarray(levels), self.value)
        out = np.zeros((n_images, len(levels)), np.int64)
        np.add.at(out, (self.image, level_index), 1)
        return out

    def image_mean(self, n_images: int) -> np.ndarray:
        return np.bincount(self.image, self.value, n_images) / np.bincount(self.image, minlength=n_images)

    def image_sd(self, n_images: int) -> np.ndarray:
        """Sample standard deviation (ddof=1) of each image's votes, as KonIQ-10k's SD column."""
        n = np.bincount(self.image, minlength=n_images)
        mean = self.image_mean(n_images)
        ss = np.bincount(self.image, (self.value - mean[self.image]) ** 2, n_images)
        return np.sqrt(ss / np.maximum(n - 1, 1))

    def zscore_mean(self, n_images: int) -> np.ndarray:
        """Mean over each image of its votes z-scored per rater (KonIQ-10k's MOS_zscore before rescaling)."""
        n_raters = int(self.rater.max()) + 1
        cnt = np.bincount(self.rater, minlength=n_raters)
        mean = np.bincount(self.rater, self.value, n_raters) / np.maximum(cnt, 1)
        var = np.bincount(self.rater, (self.value - mean[self.rater]) ** 2, n_raters) / np.maximum(cnt - 1, 1)
        sd = np.sqrt(var)
        sd[sd == 0] = 1.0  # a rater who always gave the same vote carries no spread to normalise
        z = (self.value - mean[self.rater]) / sd[self.rater]
        return np.bincount(self.image, z, n_images) / np.bincount(self.image, minlength=n_images)


def simulate_votes(means: np.ndarray, panel: Panel, rng: np.random.Generator) -> Votes:
    """Each image is rated by a random subset of the panel: mean + rater bias + noise, on the levels."""
    bias = rng.normal(0.0, panel.bias_sd, panel.pool)
    lo, hi = panel.votes_per_image
    n_votes = rng.integers(lo, hi + 1, len(means))
    raters = [rng.choice(panel.pool, size=min(int(n), panel.pool), replace=False) for n in n_votes]
    rater = np.concatenate(raters)
    image = np.repeat(np.arange(len(means)), [len(r) for r in raters])
    raw = means[image] + bias[rater] + rng.normal(0.0, panel.noise_sd, len(rater))
    levels = np.asarray(panel.vote_levels, dtype=np.float64)
    step = levels[1] - levels[0]  # vote levels are evenly spaced
    value = np.clip(levels[0] + np.rint((raw - levels[0]) / step) * step, levels[0], levels[-1])
    return Votes(rater, image, value)


# SPAQ's five attribute columns, each a 0..100 rating of one property of the photo
SPAQ_ATTRIBUTES = ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")


def spaq_attributes(items: list[Item], mos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 5) attribute ratings: the attribute a distortion attacks drops with its level, the others
    follow the overall score with a little lift (a blurred photo can still be well exposed)."""
    out = np.empty((len(items), len(SPAQ_ATTRIBUTES)))
    for i, it in enumerate(items):
        hurt = DISTORTIONS.get(it.distortion).attribute if it.level else None
        deg = DISTORTIONS.get(it.distortion).degradation(it.level) if it.level else 0.0
        for j, name in enumerate(SPAQ_ATTRIBUTES):
            shift = -12.0 * deg if name == hurt else 14.0 * deg
            out[i, j] = mos[i] + shift + rng.normal(0.0, 6.0)
    return np.clip(out, 0.0, 100.0)


def plan_items(
    n_refs: int, sources: tuple[str, ...], seed: int, types_per_source: int, levels_per_type: int
) -> dict[str, list[Item]]:
    """Each source gets every reference's pristine crop plus its own distortion types at a few levels.

    A reference's nine distortion types are dealt out across the sources (so the same distorted
    image rarely appears twice), and each source sees every type over the references, at levels
    drawn from its `LEVEL_MIX`.
    """
    rng = np.random.default_rng([seed, 4])
    names = DISTORTIONS.names()
    plan: dict[str, list[Item]] = {s: [] for s in sources}
    mix = {s: np.asarray(LEVEL_MIX[s]) / sum(LEVEL_MIX[s]) for s in sources}
    for r in range(n_refs):
        order = rng.permutation(len(names))
        for k, source in enumerate(sources):
            plan[source].append(Item(r, PRISTINE, 0))
            for j in range(types_per_source):
                name = names[order[(k * types_per_source + j) % len(names)]]
                levels = np.sort(rng.choice(5, size=levels_per_type, replace=False, p=mix[source])) + 1
                plan[source].extend(Item(r, name, int(lv)) for lv in levels)
    for source in sources:
        perm = rng.permutation(len(plan[source]))  # file order must not reveal the design
        plan[source] = [plan[source][i] for i in perm]
    return plan
