"""A rank of the 2-process CRD memory test (tests/test_loss_mi.py): spawned by torch.multiprocessing, so it
lives in an importable module of its own."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def update_on_rank(rank: int, world: int, port: int, out: str, index: torch.Tensor, v_s: torch.Tensor,
                   v_t: torch.Tensor, scores: torch.Tensor) -> None:
    """Rank ``rank`` of ``world`` (gloo): the same CRD bank (seed 0), its shard of the batch, one memory
    update and one global-mean estimate; writes the banks and the mean to ``out``-<rank>.pt."""
    from kdlab.losses.crd import CRDLoss
    from kdlab.ranks import global_mean

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        crd = CRDLoss((8,), (8,), n_data=20, k=4, feat_dim=6)
        shard = slice(rank * 3, rank * 3 + (3 if rank == 0 else 2))  # unequal shards: 3 + 2 rows
        crd.update_memory(index[shard], v_s[shard], v_t[shard])
        mean = global_mean(scores[shard].reshape(-1))
        torch.save({"memory_s": crd.memory_s, "memory_t": crd.memory_t, "mean": mean}, f"{out}-{rank}.pt")
    finally:
        dist.destroy_process_group()
