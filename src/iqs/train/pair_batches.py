"""Training batches built from per-source blocks, so that every batch holds within-source pairs.

The ranking loss (`iqs.losses.fidelity`) compares images of the same source only. With plain shuffling a
small source rarely has two images in one batch; here every batch is `sources_per_batch` blocks of at least
two rows, one block per source. Sources are picked with probability proportional to their row count and a
block's size is proportional to its source's row count (floor 2), so over an epoch each source is seen about
as often as under plain shuffling, while a small source still forms pairs. Within a source rows are drawn
without replacement and reshuffled when used up. Deterministic given the seed and the epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class WithinSourceBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset positions; pass as `DataLoader(batch_sampler=...)`.

    `group` (N,): the source index of each position. `sources_per_batch`: blocks per batch (null = every
    source, capped so that each block keeps >= 2 rows). One epoch = ceil(N / batch_size) batches.
    """

    def __init__(
        self, group: np.ndarray, batch_size: int, sources_per_batch: int | None = None, seed: int = 0
    ) -> None:
        self.group = np.asarray(group).reshape(-1)
        if len(self.group) < 2:
            raise ValueError("within-source batches need at least 2 training rows")
        self.batch_size = int(batch_size)
        self.sources, counts = np.unique(self.group, return_counts=True)
        usable = counts >= 2
        if not usable.any():
            raise ValueError("within-source batches need a source with at least 2 training rows")
        # a source with one row can never form a pair: it is left out of these batches
        self.sources, self.counts = self.sources[usable], counts[usable]
        k = len(self.sources) if sources_per_batch is None else int(sources_per_batch)
        if k < 1:
            raise ValueError(f"sources_per_batch must be >= 1, got {sources_per_batch}")
        self.k = max(1, min(k, len(self.sources), self.batch_size // 2))
        if self.batch_size < 2:
            raise ValueError(f"within-source batches need batch_size >= 2, got {batch_size}")
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(int(self.counts.sum()) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        members = {s: np.flatnonzero(self.group == s) for s in self.sources}
        queues = {s: rng.permutation(m) for s, m in members.items()}
        cursor = dict.fromkeys(self.sources, 0)
        share = self.counts / self.counts.sum()
        for _ in range(len(self)):
            chosen = rng.choice(len(self.sources), size=self.k, replace=False, p=share)
            batch: list[int] = []
            for s, block in zip(self.sources[chosen], self._block_sizes(chosen), strict=True):
                size = min(int(block), len(members[s]))  # no image twice in one batch
                if len(queues[s]) - cursor[s] < size:
                    # used up: the unused rest first, then a fresh permutation of the others
                    rest = queues[s][cursor[s] :]
                    others = np.setdiff1d(members[s], rest)
                    queues[s], cursor[s] = np.concatenate([rest, rng.permutation(others)]), 0
                batch.extend(queues[s][cursor[s] : cursor[s] + size].tolist())
                cursor[s] += size
            yield batch

    def _block_sizes(self, chosen: np.ndarray) -> np.ndarray:
        """Rows per chosen source: proportional to its row count, at least 2, summing to batch_size
        (2 per source may overshoot it when many small sources meet in one batch)."""
        counts = self.counts[chosen]
        sizes = np.maximum(2, np.floor(self.batch_size * counts / counts.sum()).astype(np.int64))
        largest = int(np.argmax(sizes))
        sizes[largest] = max(2, sizes[largest] + self.batch_size - int(sizes.sum()))
        return sizes
