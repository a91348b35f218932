"""Several processes (data-parallel ranks) seen from one: the global batch's random numbers, rows
gathered from every rank, batch statistics over every rank.

kdlab's contract under DDP is that W ranks with ``data.batch_size = b`` compute what one process with
the global batch ``B = W b`` computes (up to floating-point summation order). The data half is the
sampler's: rank r's batch is rows ``r, r + W, ...`` of the one-process batch
(:class:`kdlab.data.SeededSampler`). This module is the other half:

* **Random draws**: every rank keeps the one-process random stream (the same seed, never re-seeded per
  rank), and a draw with one row per sample (a latent z, input noise, Langevin noise, Gumbel noise, CRD's
  negatives, dropout masks) draws the global batch's rows and keeps rows ``r::W`` (:func:`rank_rows`),
  so sample i gets the number it gets in one process and the streams stay equal on every rank.
* **Batch statistics** (a batch-mean prediction, BatchNorm statistics, CRD's partition estimate): sums
  over every rank's rows, differentiable (:func:`global_sum`: ``torch.distributed.nn.functional.all_reduce``,
  whose backward sums the upstream gradients over the ranks, so that DDP's average of the ranks'
  gradients is the gradient of the global statistic).

With one process (or no initialised process group) every function is the identity or the plain draw.
Below every other layer of kdlab (imports torch only).
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["distributed", "world", "rank_rows", "all_rows", "global_rows", "global_sum", "global_mean", "rank_dropout"]


def distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> Tuple[int, int]:
    """``(world size W, this rank r)``; ``(1, 0)`` in one process."""
    return (dist.get_world_size(), dist.get_rank()) if distributed() else (1, 0)


def rank_rows(draw: Callable[[int], torch.Tensor], n: int, dim: int = 0) -> torch.Tensor:
    """This rank's ``n`` rows of a random draw made for the global batch.

    Args:
        draw: ``m -> tensor`` with ``m`` rows along ``dim``, drawn from a stream every rank holds in
            the same state (the default torch generator, or one seeded alike on every rank).
        n: this rank's batch size; every rank must call with the same ``n`` at the same point (the
            training loop's ranks do: the sampler pads the shards to equal length).
        dim: the batch dimension of the draw.

    Returns:
        ``draw(n * W)`` restricted to rows ``r, r + W, ..., r + (n - 1) W`` along ``dim`` (one process:
        ``draw(n)``), so the ranks' rows together are the one-process draw, each at the position of its
        sample in the one-process batch.
    """
    w, r = world()
    if w == 1:
        return draw(n)
    full = draw(n * w)
    return full.index_select(dim, torch.arange(r, n * w, w, device=full.device))


def all_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` [B, ...] of this rank -> every rank's rows in rank order (the batches may differ in size);
    not differentiable (for buffers, e.g. memory-bank updates)."""
    if not distributed():
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    most = int(max(int(s) for s in sizes))
    padded = torch.cat([t, t.new_zeros((most - t.shape[0],) + tuple(t.shape[1:]))]) if t.shape[0] < most else t
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)])


def global_rows(t: torch.Tensor) -> torch.Tensor:
    """The one-process batch from every rank's ``t`` [b, ...] (equal b on every rank): row ``j W + r`` is rank
    r's row j, the inverse of :func:`rank_rows`' split; not differentiable. ``t`` in one process."""
    w, _ = world()
    if w == 1:
        return t
    b = t.shape[0]
    return all_rows(t).reshape(w, b, *t.shape[1:]).transpose(0, 1).reshape(w * b, *t.shape[1:])


def global_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks, with gradients (module docstring); ``t`` itself in one process."""
    if not distributed():
        return t
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t, op=dist.ReduceOp.SUM)


def global_mean(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The mean of ``t`` over ``dim`` across every rank's rows (differentiable): ``t.mean(dim)`` in one
    process. The row counts are summed too, so ranks with unequal batches weigh each row alike."""
    if not distributed():
        return t.mean(dim)
    count = global_sum(torch.tensor(float(t.shape[dim]), device=t.device, dtype=t.dtype))
    return global_sum(t.sum(dim)) / count


def _dropout_forward(m: nn.Dropout) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if not (m.training and m.p > 0) or x.dim() == 0:
            return m.__class__.forward(m, x)
        keep = 1.0 - m.p
        # F.dropout's own decomposition (a Bernoulli(1 - p) mask scaled by 1 / (1 - p)), on the global batch
        mask = rank_rows(lambda k: torch.empty((k,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
                         .bernoulli_(keep), x.shape[0])
        return x * mask.div_(keep) if keep > 0 else x * 0.0
    return forward


def rank_dropout(net: nn.Module) -> int:
    """Make every elementwise ``nn.Dropout`` of ``net`` draw its mask for the global batch and keep this
    rank's rows (:func:`rank_rows`), as one process would mask those samples; returns how many layers
    changed (none in one process). Channel dropout (``Dropout2d`` ...) is left as it is."""
    if not distributed():
        return 0
    n = 0
    for m in net.modules():
        if type(m) is nn.Dropout and "forward" not in m.__dict__:
            m.forward = _dropout_forward(m)  # an instance attribute shadows the class's forward
            n += 1
    return n
