"""GroupedQualityMetrics under DDP: states synced over 2 gloo processes equal one process's metrics.

The worker lives in this light module (torch and iqs.metrics only): spawned processes import it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch


def _grouped_batches() -> list[dict[str, torch.Tensor]]:
    """Three sources; source 2 appears only in the first rows, so on rank 1 it has no rows at all."""
    g = torch.Generator().manual_seed(0)
    n = 41
    true = 1 + 9 * torch.rand(n, generator=g)
    pred = true + torch.randn(n, generator=g)
    idx = torch.tensor([2] * 6 + [0, 1] * 17 + [0], dtype=torch.long)
    cls = (true > 5).long() + (true > 6).long()
    pcls = (pred > 5).long() + (pred > 6).long()
    return [{"pred": pred, "true": true, "pcls": pcls, "cls": cls, "idx": idx}]


def _metrics():
    from iqs.metrics import GroupedQualityMetrics

    return GroupedQualityMetrics(["a", "b", "c"])


def _sync_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    b = _grouped_batches()[0]
    # rank 0 gets the first 20 rows (all of source c), rank 1 the rest: uneven shards, an empty group
    part = slice(0, 20) if rank == 0 else slice(20, None)
    m = _metrics()
    m.update(b["pred"][part], b["true"][part], b["pcls"][part], b["cls"][part], b["idx"][part])
    values = m.compute()
    counts = m.sample_counts()
    torch.save({"values": values, "counts": counts}, f"{out}/rank{rank}.pt")
    # as iqs.train.distributed.finish: every rank reaches the end before any closes the group; rank 0 (which
    # hosts the TCP store) then outlives rank 1's teardown, whose store calls aborted it once (SIGABRT)
    dist.barrier()
    dist.destroy_process_group()
    done = Path(out) / "rank1.done"
    if rank == 1:
        done.touch()
        return
    deadline = time.monotonic() + 120
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.slow
def test_grouped_metrics_synced_over_two_processes_equal_one_process(tmp_path):
    import torch.multiprocessing as mp
    from lightning_fabric.plugins.environments.lightning import find_free_network_port

    # forkserver: one clean process imports torch and the metrics once, then forks both ranks (spawn would
    # import them in each rank; a fork of this worker would inherit its threads)
    mp.set_forkserver_preload(["torch", "iqs.metrics", __name__])
    args = (find_free_network_port(), str(tmp_path))
    mp.start_processes(_sync_worker, args=args, nprocs=2, join=True, start_method="forkserver")
    b = _grouped_batches()[0]
    ref = _metrics()
    ref.update(b["pred"], b["true"], b["pcls"], b["cls"], b["idx"])
    expected, expected_counts = ref.compute(), ref.sample_counts()
    assert expected_counts == {"a": 18, "b": 17, "c": 6, "all": 41}
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got["counts"] == expected_counts
        assert got["values"].keys() == expected.keys()
        for k, v in expected.items():
            assert math.isclose(got["values"][k], v, rel_tol=1e-9, abs_tol=1e-12) or (
                math.isnan(v) and math.isnan(got["values"][k])
            ), k
