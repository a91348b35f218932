"""Helpers shared by the step benchmarks: a method ready to step, and timed steps."""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from kdlab.data import transfer_info
from kdlab.engine import make_fabric
from kdlab.methods import METHODS


def ready_method(cfg, data, transfer):
    """The method of ``cfg`` built on ``data`` (transfer source ``transfer``), set up on one device, in train mode."""
    method = METHODS.get(cfg.method)(cfg, data.spec, transfer_info(transfer))
    method.setup(make_fabric(cfg.trainer, None))
    method.train()
    return method


def run_steps(method, batches) -> float:
    """Seconds for ``method.training_step`` over ``batches`` (CUDA synchronised at the end)."""
    t0 = time.perf_counter()
    for i, b in enumerate(batches):
        method.training_step(b, i)
    if torch.cuda.is_initialized():  # data-free batches carry no tensor to tell the device by
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def extra_peak_rss_mib(fn) -> float:
    """Peak resident memory (MiB) that ``fn()`` adds on top of what the process holds before it (Linux:
    the peak ``VmHWM`` is reset through ``/proc/self/clear_refs`` first, then compared with ``VmRSS``)."""
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def child_peak_mib(script: str, child: str, args) -> float:
    """Extra peak resident memory (MiB) of configuration ``child``, measured by running ``script`` again
    with ``--child child`` in a fresh process (so earlier configurations do not mask it); ``args`` are the
    strings passed on (``--tmp``, sizes, ``--device``, ``--threads``). The child prints
    ``{"extra_mib": ...}`` as its last line."""
    cmd = [sys.executable, script, "--child", child, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)["extra_mib"]


def bench_parser(doc: str, **sizes: int) -> argparse.ArgumentParser:
    """The options every step benchmark takes (``--reps``, ``--threads``, ``--device`` and the hidden
    ``--child`` / ``--tmp`` of :func:`child_peak_mib`), plus one integer option per ``sizes`` entry
    (e.g. ``steps=10`` -> ``--steps``, default 10)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    for name, default in sizes.items():
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    return ap


def paired_ratio(num, den) -> float:
    """The median over repetitions of ``num[i] / den[i]`` (two lists of per-repetition values): the runs of one
    repetition are adjacent in time, so machine load that drifts between repetitions cancels in it."""
    return statistics.median(a / b for a, b in zip(num, den))


def interleaved_times(methods, batches, reps: int, device: str):
    """``({name: [seconds per repetition]}, {name: peak CUDA MiB})``: every method's ``training_step``
    over ``batches``, repetitions interleaved across methods; the first repetition warms up and is dropped.
    The peak dict is empty off CUDA (measure CPU memory with :func:`child_peak_mib`)."""
    times = {n: [] for n in methods}
    peak = {}
    for rep in range(reps + 1):
        for n, m in methods.items():
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            dt = run_steps(m, batches)
            if device == "cuda":
                peak[n] = torch.cuda.max_memory_allocated() / 2**20
            if rep:
                times[n].append(dt)
    return times, peak
