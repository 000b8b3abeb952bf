"""Leakage-proof train/val/test splits of a mixture's images (README, "Labels and splits").

Rules, in order:

1. Splits are made on images (rows of a SampleTable), never on votes.
2. Official splits win: rows an adapter marked train/val/test keep that split.
3. Every other row gets the split of its `group`, decided once for the whole mixture, so that a group
   lands in the same split in every source:
   - a group that is officially test (or val, or train) in some source takes that split for its
     unassigned rows (test first, then val, then train): EVA's twin of an image in AVA's official test
     list goes to EVA's test instead of being thrown away;
   - otherwise a seeded hash of the group gives a number u in [0, 1). A group with a "trainval" row
     (an official test exists and this row is not in it) never goes to test: val when
     u < val_fraction, else train. Any other group: test when u < test_fraction, val when
     u < test_fraction + val_fraction, else train.
4. Dedup (`dedupe`): a group in any test split leaves every train and val split of the mixture, and
   a group in val leaves train. The removed rows are returned with the reason.

The hash depends only on the seed and the group name, not on which other sources or rows are in the
mixture, so a source's seeded test set is the same in every mixture with the same seed and fractions
(per-dataset test metrics of two runs on different mixtures stay comparable). The price is that the
fractions are met in expectation (binomial noise, about sqrt(p(1-p)/n_groups)), not exactly.

**k-fold cross-validation over groups** (`folds=k, fold=i`; `assign_folds`): every group that rule 3
would split (no official split) goes to one of k folds; fold i is the test split, and validation is
drawn by group from the other folds (a second seeded hash, `val_fraction` of those groups). Official
splits keep rule 2 ("trainval" rows are never tested). The folds are balanced: the groups, ordered by
their seeded hash, are dealt round-robin, so with 15 photographs and k=5 every fold tests exactly 3.
Plain `floor(k * hash)` would keep a group's fold independent of the other groups, but on small data
it leaves folds empty or double-sized (15 groups, k=5: a fold of 0 or 6 photographs is likely), which
is exactly where cross-validation is needed. The price: a group's fold depends on the set of groups in
the mixture, so pooled results compare only between runs of one mixture (a paired comparison needs
the same test images anyway). A group still lands in one fold in every source of the mixture (EVA
and its AVA twins share the group name).
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

from iqs.data.table import SPLITS

log = logging.getLogger(__name__)

REMOVED_COLUMNS = ["dataset", "image_id", "group", "split", "reason"]


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0):
        raise ValueError(
            f"val_fraction and test_fraction must be in [0, 1), got {val_fraction} and {test_fraction}"
        )
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 so that something is left to train on, "
            f"got {val_fraction} + {test_fraction}"
        )


def group_uniform(groups: pd.Series | np.ndarray | list, seed: int) -> np.ndarray:
    """A number in [0, 1) per group from a seeded BLAKE2b hash of its name.

    Python's hash() is salted per process and pandas' hash_pandas_object is not promised stable across
    versions; a split must reproduce on any machine, so the bytes are hashed explicitly (once per
    unique group).
    """
    values = pd.Series(np.asarray(groups, dtype=object)).astype(str)
    codes, uniques = pd.factorize(values)
    key = f"iqs-split:{int(seed)}:".encode()
    u = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(key + g.encode(), digest_size=8).digest(), "big") / 2.0**64
            for g in uniques
        ),
        dtype=np.float64,
        count=len(uniques),
    )
    return u[codes]


def check_folds(folds: int | None, fold: int | None) -> None:
    if folds is None:
        if fold is not None:
            raise ValueError(f"fold={fold} needs folds=k (the number of folds)")
        return
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2 (or null for one seeded split), got {folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ValueError(f"fold must be an integer in [0, {folds - 1}] with folds={folds}, got {fold!r}")


def assign_folds(groups: pd.Series | np.ndarray | list, seed: int, folds: int) -> np.ndarray:
    """Fold (0..folds-1) of every row's group: groups ordered by their seeded hash, dealt round-robin.

    Balanced to within one group per fold; see the module doc for why not `floor(folds * hash)`.
    """
    values = pd.Series(np.asarray(groups, dtype=object)).astype(str)
    codes, uniques = pd.factorize(values)
    order = np.lexsort((uniques.to_numpy(dtype=str), group_uniform(uniques, seed)))  # name breaks ties
    fold_of_unique = np.empty(len(uniques), dtype=np.int64)
    fold_of_unique[order] = np.arange(len(uniques)) % int(folds)
    return fold_of_unique[codes]


def assign_splits(
    df: pd.DataFrame,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    folds: int | None = None,
    fold: int | None = None,
) -> pd.Series:
    """Final split (train/val/test) of every row of a (mixture) SampleTable; see the module doc.

    With `folds=k, fold=i`: k-fold cross-validation over groups, fold i tested (`test_fraction` unused).
    """
    check_folds(folds, fold)
    if folds is None:
        check_fractions(val_fraction, test_fraction)
    else:
        check_fractions(val_fraction, 0.0)
    official = df["split"].astype(object).where(df["split"].notna(), None)
    unknown = set(official.dropna().unique()) - {*SPLITS, "trainval"}
    if unknown:
        raise ValueError(
            f"unknown split values {sorted(unknown)}; expected train, val, test, trainval or None"
        )
    group = df["group"].astype(str)

    def groups_with(value: str) -> set[str]:
        return set(group[official == value].unique())

    in_test, in_val, in_train, in_trainval = (groups_with(s) for s in ("test", "val", "train", "trainval"))

    u = group_uniform(group.to_numpy(), seed)
    if folds is None:
        seeded_full = np.where(
            u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "val", "train")
        )
        seeded_trainval = np.where(u < val_fraction, "val", "train")
    else:
        # only groups without an official split take part in the folds
        free = ~group.isin(in_test | in_val | in_train | in_trainval).to_numpy()
        fold_of = np.full(len(group), -1, dtype=np.int64)
        fold_of[free] = assign_folds(group.to_numpy()[free], seed, folds)
        # validation: a second, independent hash over the groups of the other folds
        u_val = group_uniform(("val:" + group).to_numpy(), seed)
        seeded_trainval = np.where(u_val < val_fraction, "val", "train")
        seeded_full = np.where(fold_of == fold, "test", seeded_trainval)
    g_test, g_val, g_train, g_tv = (
        group.isin(s).to_numpy() for s in (in_test, in_val, in_train, in_trainval)
    )

    # for unassigned rows: inherit an official split of the group, else the seeded one
    unassigned = np.select(
        [g_test, g_val, g_train, g_tv], ["test", "val", "train", seeded_trainval], default=seeded_full
    )
    # "trainval" rows never go to test; they follow an official val/train of their group, else the hash
    trainval = np.select([g_val, g_train], ["val", "train"], default=seeded_trainval)

    out = np.where(official.isna(), unassigned, np.where(official == "trainval", trainval, official))
    return pd.Series(out, index=df.index, name="split", dtype=object)


def dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop train/val rows whose group is in a test split, then train rows whose group is in val.

    Returns (kept rows, removed rows with columns REMOVED_COLUMNS). Works across sources and within one
    (an adapter's official split may put two rows of one group on both sides).
    """
    removed_parts = []
    keep = pd.Series(True, index=df.index)
    for held_out, leaves in (("test", ("train", "val")), ("val", ("train",))):
        live = df[keep]
        where_held = live[live["split"] == held_out].groupby("group", sort=False)["dataset"].unique()
        hit = keep & df["split"].isin(leaves) & df["group"].isin(where_held.index)
        if hit.any():
            rows = df.loc[hit, ["dataset", "image_id", "group", "split"]].copy()
            holders = where_held.map(lambda ds: ", ".join(sorted(ds)))
            rows["reason"] = "group " + rows["group"] + f" is in {held_out} of " + rows["group"].map(holders)
            removed_parts.append(rows)
            keep &= ~hit
    removed = (
        pd.concat(removed_parts).sort_index()
        if removed_parts
        else pd.DataFrame({c: pd.Series(dtype=object) for c in REMOVED_COLUMNS})
    )
    for dataset, n in removed.groupby("dataset", sort=False).size().items():
        log.info("%s: removed %d train/val rows whose image is held out in another split", dataset, n)
    return df[keep], removed.reset_index(drop=True)[REMOVED_COLUMNS]
