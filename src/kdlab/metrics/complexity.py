"""Model size and cost: parameter count, multiply-accumulates (MACs) and CPU latency."""
from __future__ import annotations

import copy
import statistics
import time
from typing import Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .accuracy import eval_mode

__all__ = ["count_parameters", "count_macs", "cpu_latency_ms"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (shared parameters counted once).

    Buffers (e.g. BatchNorm running mean/var) are not parameters and are not counted.

    Args:
        trainable_only: count only parameters with ``requires_grad=True``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _check_shape(input_shape: Sequence[int]) -> Tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
        ok = len(shape) > 0 and all(s > 0 and s == v for s, v in zip(shape, input_shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"input_shape must be the per-image shape as positive ints, e.g. (1, 28, 28) = (C, H, W); "
            f"got {input_shape!r}"
        )
    return shape


def _model_device_dtype(model: nn.Module) -> Tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    if p is None:
        return torch.device("cpu"), torch.float32
    return p.device, (p.dtype if p.is_floating_point() else torch.float32)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulate operations of one forward pass on ONE image of shape ``input_shape``.

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2) on a zero input
    of shape ``[1, *input_shape]`` in eval mode under ``no_grad``; the model's train/eval modes are
    restored afterwards. FlopCounterMode counts matrix products and convolutions (``mm``, ``addmm``,
    ``bmm``, ``conv``, attention): a Linear(i, o) costs i*o MACs, a Conv2d costs
    C_out * C_in/groups * kH * kW * H_out * W_out. Bias additions, normalisation, activations and
    pooling are not counted (the usual convention of papers' MAC tables).

    Args:
        input_shape: per-image shape, normally ``(C, H, W)`` (e.g. ``(1, 28, 28)``).

    Raises:
        ValueError: ``input_shape`` is not a non-empty tuple of positive ints.
    """
    shape = _check_shape(input_shape)
    device, dtype = _model_device_dtype(model)
    x = torch.zeros((1, *shape), device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops()) // 2


def cpu_latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    warmup: int = 5,
    iters: int = 30,
) -> float:
    """Median CPU wall-clock time per image, in milliseconds.

    Times ``iters`` forward passes of a batch ``[batch_size, *input_shape]`` (after ``warmup``
    untimed ones) in eval mode under ``no_grad`` with ``time.perf_counter``, and returns
    median(batch time) / batch_size. Uses torch's current CPU thread count
    (``torch.get_num_threads()``), so compare numbers taken with the same setting. A model that is
    not on the CPU is timed on a CPU copy (the original is left where it is); modes are restored.

    Raises:
        ValueError: bad ``input_shape``, ``batch_size < 1``, ``warmup < 0`` or ``iters < 1``.
    """
    shape = _check_shape(input_shape)
    for name, value, low in (("batch_size", batch_size, 1), ("warmup", warmup, 0), ("iters", iters, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    device, dtype = _model_device_dtype(model)
    if device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    x = torch.zeros((batch_size, *shape), dtype=dtype)
    times = []
    with eval_mode(model), torch.no_grad():
        for _ in range(warmup):
            model(x)
        for _ in range(iters):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times) / batch_size
