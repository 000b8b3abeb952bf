"""Which process this is, and the shard of every loader it reads under DDP (iqs.train.distributed).

`train_sampler`, `eval_sampler` and `ShardedBatchSampler` give every rank a disjoint shard. Validation and
test shards are never padded (a padded DistributedSampler would count some rows twice); torchmetrics syncs
the grouped metrics' states across ranks in `compute()` (iqs.metrics.grouped). Outside DDP each returns
what a single process uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

# ---------------------------------------------------------------- ranks


def global_rank() -> int:
    """This process's rank before the trainer exists: Lightning's `rank_zero_only.rank` (from RANK,
    LOCAL_RANK or SLURM_PROCID), and never 0 on a node other than the first."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    rank = int(getattr(rank_zero_only, "rank", 0) or 0)
    if rank or "RANK" in os.environ:
        return rank
    # local rank 0 of a later node (Lightning reads LOCAL_RANK only): not the global rank, but not 0
    return int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")) or 0)


def is_global_zero() -> bool:
    return global_rank() == 0


def world() -> tuple[int, int] | None:
    """(rank, world size) while a process group of more than one process is open, else None."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return None


# ---------------------------------------------------------------- samplers


def train_sampler(dataset: Dataset, sampler: Sampler[int] | None, seed: int) -> Sampler[int] | None:
    """The training sampler for this rank; `sampler` itself (None = plain shuffle) outside DDP.

    A rebalancing sampler (weighted draw with replacement) is wrapped in Lightning's
    `DistributedSamplerWrapper`: every rank makes the same seeded draw and keeps positions rank::world of
    it, so the ranks train on disjoint shards of one draw. Without one, a seeded `DistributedSampler`
    shuffles (reshuffled every epoch: Lightning calls `set_epoch`). Both pad the last shard by a few rows
    so every rank runs the same number of steps, which DDP's gradient all-reduce needs.
    """
    shard = world()
    if shard is None:
        return sampler
    rank, size = shard
    if sampler is None:
        return DistributedSampler(dataset, num_replicas=size, rank=rank, shuffle=True, seed=seed)
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

    return DistributedSamplerWrapper(sampler, num_replicas=size, rank=rank, shuffle=False)


def eval_sampler(dataset: Dataset) -> Sampler[int] | None:
    """Validation/test rows for this rank, each row on exactly one rank (no padding); None outside DDP."""
    shard = world()
    if shard is None:
        return None
    from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

    rank, size = shard
    return UnrepeatedDistributedSampler(dataset, num_replicas=size, rank=rank, shuffle=False)


class ShardedBatchSampler(Sampler[list[int]]):
    """Batches rank::world of a batch sampler that every rank iterates alike (same seed, same epoch).

    Hand-rolled because Lightning only shards samplers of single indices; cut to the same number of
    batches on every rank so DDP's all-reduce never waits for a missing step.
    """

    def __init__(self, batches: Sampler[list[int]], rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, int(rank), int(world_size)

    def __len__(self) -> int:
        return len(self.batches) // self.world_size  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        mine = list(self.batches)[self.rank :: self.world_size]
        return iter(mine[: len(self)])


def shard_batches(batches: Sampler[list[int]]) -> Sampler[list[int]]:
    shard = world()
    return batches if shard is None else ShardedBatchSampler(batches, *shard)
