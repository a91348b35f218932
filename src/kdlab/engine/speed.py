"""Speed options of the shared loop (``trainer.compile``, ``trainer.channels_last``, ``data.pin_memory``).

Each changes how a computation runs, never what it computes (up to floating-point reassociation):

* ``compile_networks``: ``nn.Module.compile`` (in place, so state-dict keys and checkpoints are those of
  the plain network) of the networks a method names; a network whose intermediate features a term reads
  through forward hooks is left eager (hooks registered per call would recompile every step).
* ``to_channels_last`` / ``channels_last_batch``: NHWC memory format for 4-D weights and inputs (faster
  convolutions with cuDNN and oneDNN on many shapes).
* pinned memory is a ``make_loader`` argument (:func:`pin_memory_for`); ``Batch.pin_memory`` pins a batch.
* ``setup_player``: Fabric's module and optimizer wrappers only where they do something (several
  processes, or a precision other than plain fp32); elsewhere each forward call would pay for them
  (about 0.1 ms: input/output conversion walks and backward hooks) for no change.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, List, Optional, Tuple

import torch
from torch import nn

log = logging.getLogger(__name__)

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


def compile_networks(nets: Iterable[Tuple[str, nn.Module, Optional[str]]], mode: str) -> List[str]:
    """Compile each ``(name, network, why_not)`` in place with ``torch.compile`` mode ``mode`` unless
    ``why_not`` gives a reason to stay eager (features read by hooks; double backward for input
    gradients, which compiled graphs do not support); returns the names compiled (skips are logged).

    Raises:
        ValueError: unknown ``mode`` (lists the accepted ones).
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown trainer.compile {mode!r}; accepted: {', '.join(COMPILE_MODES)}")
    done: List[str] = []
    if mode == "none":
        return done
    for name, net, why_not in nets:
        if why_not:
            log.warning("trainer.compile: %s stays eager (%s)", name, why_not)
            continue
        net.compile(mode=None if mode == "default" else mode)
        done.append(name)
    return done


def to_channels_last(module: nn.Module) -> nn.Module:
    """``module`` with its 4-D parameters and buffers in channels-last format (in place; others unchanged)."""
    return module.to(memory_format=torch.channels_last)


def channels_last_batch(batch: Any) -> Any:
    """``batch`` (a :class:`kdlab.data.Batch`) with its 4-D inputs in channels-last format."""
    changes = {f: getattr(batch, f).contiguous(memory_format=torch.channels_last)
               for f in ("x", "x_teacher") if getattr(batch, f) is not None and getattr(batch, f).dim() == 4}
    return dataclasses.replace(batch, **changes) if changes else batch


def pin_memory_for(setting: Any, device: torch.device) -> bool:
    """``data.pin_memory``: the given bool, or (None) True exactly when training on CUDA."""
    return bool(setting) if setting is not None else device.type == "cuda"


#: ``data.on_device: null`` holds a set on a CUDA device only up to this share of the device's memory
ON_DEVICE_SHARE = 0.25


def data_on_device(setting: Any, num_workers: int, dataset: Any, device: torch.device) -> bool:
    """``data.on_device``: whether the training batches are cut from a copy of the set on the training device
    (:class:`kdlab.data.DeviceBatches`) instead of a DataLoader. Only an in-memory set (uint8) with
    ``data.num_workers: 0`` can be; None decides: yes on the CPU (the set is there already; this skips the
    DataLoader's per-batch work) and on CUDA when the images take at most :data:`ON_DEVICE_SHARE` of the
    device's memory; True asks for it (an ineligible set then trains through the DataLoader as before).
    """
    from kdlab.data import in_memory_rows

    if setting is False or num_workers > 0:
        return False
    found = in_memory_rows(dataset)
    if found is None:
        return False
    if setting is True or device.type == "cpu":
        return True
    if device.type != "cuda":
        return False
    base = found[0]
    size = base.images.numel() * base.images.element_size()
    return size <= ON_DEVICE_SHARE * torch.cuda.get_device_properties(device).total_memory


def fabric_wraps(fabric: Any) -> bool:
    """Whether Fabric's wrappers change anything for ``fabric``: False for one process on one device in
    plain fp32 (``SingleDeviceStrategy`` with the base ``Precision`` plugin, i.e. ``precision=32-true``),
    where they convert no input or output and require nothing of backward."""
    from lightning_fabric.plugins import Precision
    from lightning_fabric.strategies import SingleDeviceStrategy

    strategy = getattr(fabric, "strategy", None)  # a stand-in without one: leave the setup to it
    return not (type(strategy) is SingleDeviceStrategy and type(strategy.precision) is Precision)


def setup_player(fabric: Any, module: nn.Module, optimizer: Any) -> Tuple[nn.Module, Any]:
    """``fabric.setup(module, optimizer)`` where :func:`fabric_wraps`; else ``module`` moved to
    ``fabric.device`` and ``optimizer`` as they are (``fabric.backward`` works on either). Returns
    ``(module, optimizer)``; the optimizer may be None (then only the module is set up)."""
    if not fabric_wraps(fabric):
        return module.to(fabric.device), optimizer
    if optimizer is None:
        return fabric.setup(module), None
    return fabric.setup(module, optimizer)


def nvml_check_where_useful() -> None:
    """Lightning Fabric sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` on import (a CUDA check that does not
    initialise CUDA before workers fork). Where NVML cannot be loaded (a CUDA build of torch on a machine
    without an NVIDIA driver), torch falls back to the CUDA runtime's count anyway, but first retries
    loading NVML on every ``torch.cuda.is_available()``, which Adam's ``step`` calls: ~50 us a step on
    the machine of ``benchmarks/bench_distill_step.py``. There the variable is dropped: same answer, no
    retry. Where NVML loads (a GPU machine) nothing changes."""
    import os

    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return
    try:
        unusable = torch.cuda._device_count_nvml() < 0  # private: -1 when NVML cannot be loaded
    except Exception:  # another torch: leave the variable as Lightning set it
        return
    if unusable:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]
