"""BatchNorm over every rank's batch (``trainer.sync_batchnorm``), on any device.

Under DDP an ordinary BatchNorm layer normalises each rank's batch with that batch's own statistics, so
W ranks with batch b compute something else than one process with batch W b. PyTorch's
``torch.nn.SyncBatchNorm`` computes the statistics over every rank but only on GPUs (it refuses CPU
tensors, and DDP refuses it in CPU modules, hence gloo runs). On CUDA kdlab uses it
(:func:`kdlab.models.batch_stats.sync_batchnorm`); elsewhere :class:`GlobalBatchNorm`: the per-channel
mean, then the biased variance around it (two passes, as ``F.batch_norm``), each a sum over every rank's
rows through a differentiable all-reduce (:func:`kdlab.ranks.global_sum`), so the output, the gradients
(through the statistics, to every rank's samples) and the running statistics (momentum update with the
unbiased variance of the global batch) are the one-process ones, up to floating-point summation order.
In eval mode or in one process both are plain BatchNorm.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from kdlab.ranks import distributed, global_sum


def global_batch_stats(h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean [C], biased variance [C], row count)`` of ``h`` [B, C, ...] over every dimension but 1 and
    over every rank (differentiable; this rank's alone in one process). Two passes, as ``F.batch_norm``."""
    dims = [0] + list(range(2, h.dim()))
    count = global_sum(torch.tensor(float(h.numel() // h.shape[1]), device=h.device, dtype=torch.float64))
    mean = global_sum(h.sum(dims)) / count.to(h.dtype)
    centred = h - mean.view((1, -1) + (1,) * (h.dim() - 2))
    var = global_sum((centred * centred).sum(dims)) / count.to(h.dtype)
    return mean, var, count


def syncs(m: nn.Module) -> bool:
    """Whether layer ``m`` normalises with every rank's statistics in its next forward: a
    :class:`GlobalBatchNorm` or ``torch.nn.SyncBatchNorm`` in training mode inside a process group of
    more than one rank."""
    return isinstance(m, (GlobalBatchNorm, nn.SyncBatchNorm)) and m.training and distributed()


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm (any input ``[B, C, ...]``, B may differ across ranks) whose training-mode statistics are
    every rank's (module docstring); plain BatchNorm in eval mode or in one process. Not a subclass of
    ``torch.nn.SyncBatchNorm``: DDP refuses that class on CPU modules. Built by :func:`global_batchnorm`."""

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 (torch's argument name)
        if input.dim() < 2:
            raise ValueError(f"expected an input [B, C, ...] of at least 2 dimensions, got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
        if not syncs(self):
            return super().forward(input)
        self._check_input_dim(input)
        mean, var, count = global_batch_stats(input)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                n = float(count)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1.0, 1.0)), alpha=m)
        shape = (1, -1) + (1,) * (input.dim() - 2)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.weight is not None:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def global_batchnorm(net: nn.Module) -> nn.Module:
    """``net`` with every BatchNorm layer replaced by a :class:`GlobalBatchNorm` holding the same
    ``Parameter`` objects (optimizers built on ``net`` still hold them) and running statistics; returns
    ``net`` (a new object only when ``net`` itself is a BatchNorm layer)."""
    if isinstance(net, _BatchNorm) and not isinstance(net, GlobalBatchNorm):
        new = GlobalBatchNorm(net.num_features, net.eps, net.momentum, net.affine, net.track_running_stats)
        if net.affine:
            new.weight, new.bias = net.weight, net.bias
        if net.track_running_stats:
            new.running_mean, new.running_var = net.running_mean, net.running_var
            new.num_batches_tracked = net.num_batches_tracked
        return new.train(net.training)
    for name, child in list(net.named_children()):
        setattr(net, name, global_batchnorm(child))
    return net
