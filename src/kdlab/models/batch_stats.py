"""Per-sample input Jacobians of a network whose BatchNorm normalises with the batch's statistics.

In train mode a BatchNorm layer normalises sample ``i`` with the mean and variance of the whole
batch, so ``d f(x_j) / d x_i != 0`` for ``j != i``: the input gradient of the batch sum of an output
(one backward pass) is ``sum_j d f(x_j) / d x_i``, not the per-sample Jacobian ``d f(x_i) / d x_i``.
The B - 1 cross terms are O(1/B) each, so their sum is O(1) at any batch size (measured on VGG-4:
median relative error 0.66 at B = 16, 0.68 at B = 128; issue 10).

Definition used by kdlab (Jacobian matching and the Jacobian-norm penalty of Srinivas & Fleuret,
ICML 2018, Prop. 1-2, eq. 2-3, eq. 10): the per-sample Jacobian of a train-mode network is the
Jacobian of the function the network applies to sample ``i`` given this batch, i.e. every BatchNorm
normalising with this batch's mean and (biased) variance held constant with respect to the input.
It is what an eval-mode network would give with its running statistics replaced by the batch's.

:func:`jacobian_forward` computes it with two passes:

1. the main pass on ``x.detach()``, exactly the usual train-mode forward (batch statistics, running
   statistics updated once, gradients to the parameters through the statistics), recording each
   coupled layer's batch mean and variance (they carry the parameters' graph, not the input's);
2. the Jacobian pass on the input leaf ``x``, every coupled layer normalising with the recorded
   statistics (explicit ``(h - mean) / sqrt(var + eps) * gamma + beta``, so the parameter gradient
   of a Jacobian loss still flows through the statistics: double backprop sees the same function a
   finite difference in the parameters would); running statistics are not touched; dropout replays
   the main pass's masks (the random-number state is restored), so both passes compute one function.

Its outputs equal the main pass's up to float rounding, and the input gradient of their batch sum
is exactly the per-sample Jacobian (no sample depends on another's input). Cost: one extra forward
(and its share of the double backward) per step, only for networks with a coupled layer; an
eval-mode network (the frozen teacher) or one without BatchNorm takes one pass as before. Measured:
the ``jacobian`` method's step (CE + activations + Jacobians, ``select: top``) of a VGG-4 (width 0.25)
student, batch 64, 1 CPU thread, runs at 0.74x the steps/s of the old batch-sum step.

Why not ``torch.func`` (``vmap(jacrev)`` over a functional BatchNorm): it needs the network as a pure
function of one sample (hooks for named features, in-place running-statistic updates and dropout do not
vmap cleanly), and ``jacrev`` builds all K rows of every sample's Jacobian where the selections
``top``/``label`` need one backward for the whole batch.
Several processes: with plain BatchNorm each rank's layers normalise with the rank's own batch, so the
per-sample Jacobian is that of the function given the rank's batch (W ranks of batch b differ from one
process of batch W b, as the outputs themselves do). With ``trainer.sync_batchnorm``
(:func:`sync_batchnorm`, :class:`kdlab.models.sync_bn.GlobalBatchNorm`) the main pass normalises with
every rank's statistics and the recorded statistics are those same global ones (gathered with
gradients to the parameters), so the per-sample Jacobian is ``d f(x_i) / d x_i`` given the global
batch: exactly what one process with the global batch computes. Held constant, the statistics carry no
input gradient across samples or ranks, so no collective runs inside the Jacobian pass.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from kdlab.models.sync_bn import global_batch_stats, global_batchnorm, syncs
from kdlab.ranks import rank_dropout

__all__ = ["coupled_norms", "record_batch_stats", "frozen_batch_stats", "jacobian_forward", "sync_batchnorm", "ranked_layers"]

T = TypeVar("T")
_LAYERS: "weakref.WeakKeyDictionary[nn.Module, Tuple[list, list]]" = weakref.WeakKeyDictionary()


def _layers(net: nn.Module) -> Tuple[List[Tuple[str, _BatchNorm]], List[_DropoutNd]]:
    """(BatchNorm layers, dropout layers) of ``net``, found once per network (its structure is fixed)."""
    got = _LAYERS.get(net)
    if got is None:
        mods = list(net.named_modules())
        got = ([(n, m) for n, m in mods if isinstance(m, _BatchNorm)], [m for _, m in mods if isinstance(m, _DropoutNd)])
        _LAYERS[net] = got
    return got


def coupled_norms(net: nn.Module) -> List[Tuple[str, _BatchNorm]]:
    """``(name, module)`` of every BatchNorm of ``net`` that normalises with the batch's statistics in
    its current mode: train mode, or eval mode without running statistics (``track_running_stats=False``).
    Empty: samples do not interact in ``net``'s forward pass."""
    return [(n, m) for n, m in _layers(net)[0] if m.training or m.running_mean is None]


def _stats(h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``h`` [B, C, ...] over every dimension but 1, as
    ``F.batch_norm`` normalises in train mode."""
    dims = [0] + list(range(2, h.dim()))
    var, mean = torch.var_mean(h, dim=dims, correction=0)
    return mean, var


@contextmanager
def record_batch_stats(norms: List[Tuple[str, _BatchNorm]]) -> Iterator[Dict[str, Tuple[torch.Tensor, torch.Tensor]]]:
    """While active, each forward of the layers ``norms`` (from :func:`coupled_norms`) stores
    ``name -> (mean [C], biased var [C])`` of its input; the layers compute as usual."""
    store: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def pre(m: nn.Module, args: Tuple[Any, ...]) -> None:
            # a synchronised layer normalises with every rank's statistics: record those
            store[name] = global_batch_stats(args[0])[:2] if syncs(m) else _stats(args[0])
        return pre

    try:
        for name, m in norms:
            handles.append(m.register_forward_pre_hook(hook(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


def _normalise(m: _BatchNorm, mean: torch.Tensor, var: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(h: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (h.dim() - 2)
        out = (h - mean.view(shape)) * torch.rsqrt(var.view(shape) + m.eps)
        if m.weight is not None:
            out = out * m.weight.view(shape) + m.bias.view(shape)
        return out.to(h.dtype)
    return forward


@contextmanager
def frozen_batch_stats(norms: List[Tuple[str, _BatchNorm]], stats: Dict[str, Tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """While active, each layer of ``norms`` normalises with ``stats[name]`` (from
    :func:`record_batch_stats`) instead of its input's statistics, without updating running statistics.

    Raises:
        RuntimeError: a layer without recorded statistics (it did not run in the recorded pass).
    """
    missing = [n for n, _ in norms if n not in stats]
    if missing:
        raise RuntimeError(f"no batch statistics recorded for BatchNorm layer(s) {missing}: they did not run in the main pass")
    try:
        for name, m in norms:
            m.forward = _normalise(m, *stats[name])  # an instance attribute shadows the class's forward
        yield
    finally:
        for _, m in norms:
            m.__dict__.pop("forward", None)


def jacobian_forward(net: nn.Module, x: torch.Tensor, run: Optional[Callable[[torch.Tensor], T]] = None,
                     ) -> Tuple[T, Optional[T]]:
    """The main forward and, where samples interact, a second pass whose input gradients are per-sample.

    Args:
        net: the network (unwrapped: its modules are inspected; ``run`` may call a wrapper of it).
        x: the input ``[B, ...]``; a leaf with ``requires_grad`` when input gradients will be taken.
        run: ``v -> outputs`` (default ``net(v)``), e.g. a forward that also captures features.

    Returns:
        ``(main, per_sample)``. Without a coupled layer (:func:`coupled_norms`) or when ``x`` does not
        require grad: ``(run(x), None)`` (``main``'s input gradients are already per-sample). Otherwise
        ``main = run(x.detach())`` (the ordinary train-mode pass: same values and parameter gradients)
        and ``per_sample = run(x)`` with every coupled layer's batch statistics held constant (module
        docstring); the input gradient of the batch sum of a ``per_sample`` output is, at sample i,
        ``d f(x_i) / d x_i`` with this batch's statistics.
    """
    run = net if run is None else run
    norms = coupled_norms(net) if x.requires_grad else []
    if not norms:
        return run(x), None
    dropout = any(m.training and m.p > 0 for m in _layers(net)[1])
    devices = [x.device] if x.device.type not in ("cpu", "meta") else []
    if dropout:
        cpu_state = torch.get_rng_state()
        dev_state = torch.cuda.get_rng_state(x.device) if x.device.type == "cuda" else None
    with record_batch_stats(norms) as stats:
        main = run(x.detach())
    with frozen_batch_stats(norms, stats):
        if not dropout:
            return main, run(x)
        with torch.random.fork_rng(devices=devices, device_type=x.device.type if devices else None):
            torch.set_rng_state(cpu_state)
            if dev_state is not None:
                torch.cuda.set_rng_state(dev_state, x.device)
            return main, run(x)


def sync_batchnorm(net: nn.Module, cuda: bool = False) -> nn.Module:
    """``net`` with BatchNorm statistics over every rank (``trainer.sync_batchnorm``): PyTorch's
    ``SyncBatchNorm`` on CUDA (``cuda``), :class:`~kdlab.models.sync_bn.GlobalBatchNorm` elsewhere (DDP
    refuses ``SyncBatchNorm`` on CPU modules). The layers keep their ``Parameter`` objects and running
    statistics. Returns the converted network (a new object only when ``net`` is a BatchNorm layer)."""
    out = nn.SyncBatchNorm.convert_sync_batchnorm(net) if cuda else global_batchnorm(net)
    _LAYERS.pop(out, None)
    _LAYERS.pop(net, None)
    return out


def ranked_layers(net: nn.Module, sync_bn: bool, cuda: bool = False) -> nn.Module:
    """A player's layers made to compute, on W ranks, what one process computes on the global batch:
    dropout masks drawn for the global batch (:func:`kdlab.ranks.rank_dropout`) and, with
    ``trainer.sync_batchnorm``, BatchNorm statistics over every rank (:func:`sync_batchnorm`).
    Returns the (possibly new) network; call it only inside a process group of several ranks."""
    rank_dropout(net)
    return sync_batchnorm(net, cuda) if sync_bn else net
