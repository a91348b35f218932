"""A rank of the 2-process tests in tests/test_sync_batchnorm.py: spawned by torch.multiprocessing, so it lives
in an importable module of its own. Each rank takes rows r, r + 2, ... of the one-process batch."""
from __future__ import annotations

import copy
import os

import torch
import torch.distributed as dist


def bn_on_rank(rank: int, world: int, port: int, out: str, net: torch.nn.Module, x: torch.Tensor) -> None:
    """On rank ``rank`` of ``world`` (gloo): ``net`` with synchronised BatchNorm (``sync_batchnorm``) on this
    rank's rows of ``x``: outputs, the input and parameter gradients of the output sum, the running
    statistics, the per-sample Jacobian of the Jacobian pass, two random draws (a latent and a dropout mask)
    taken by :func:`kdlab.ranks.rank_rows`; written to ``out``-<rank>.pt."""
    from kdlab.losses import input_gradients
    from kdlab.models.batch_stats import jacobian_forward, sync_batchnorm
    from kdlab.ranks import rank_dropout, rank_rows

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = x[rank::world]
        net = copy.deepcopy(net)  # spawn shares the argument's storages between the ranks: a copy of one's own
        fresh = copy.deepcopy(net)
        net = sync_batchnorm(net).train()
        xl = rows.clone().requires_grad_(True)
        y = net(xl)
        y.sum().backward()
        res = {"out": y.detach(), "x_grad": xl.grad, "buffers": {k: v.clone() for k, v in net.named_buffers()},
               "param_grads": {k: p.grad.clone() for k, p in net.named_parameters()}}
        jnet = sync_batchnorm(fresh).train()
        xj = rows.clone().requires_grad_(True)
        _, per = jacobian_forward(jnet, xj)
        res["jacobian"] = input_gradients(per, xj, None).detach()
        torch.manual_seed(5)
        res["z"] = rank_rows(lambda n: torch.randn(n, 3), 4)
        drop = torch.nn.Dropout(0.5).train()
        rank_dropout(drop)
        res["dropped"] = drop(torch.ones(4, 6))
        torch.save(res, f"{out}-{rank}.pt")
    finally:
        dist.destroy_process_group()
