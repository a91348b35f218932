"""KDGAN step vs DISTN step: steps/s for the same classifier/teacher pair and batch, and peak memory.

Both methods are built from kdlab configs on real Fashion-MNIST batches (MLP 784-800-800-10
classifier, LeNet 32-64-1024 teacher, as in KDGAN appendix C; KDGAN's discriminator is a LeNet too):

* ``distn``: the ``distill`` method with CE + Hinton KD (T = 3): one teacher forward (no grad), one
  student forward/backward per step.
* ``kdgan``: the ``kdgan`` method, schedule [1, 1, 1] (one d, one t, one c update per batch), k = 5,
  paper estimator: per step 3 discriminator, 3 teacher and 3 classifier forwards, 3 backwards.

Repetitions are interleaved (distn, kdgan, distn, ...) and the median is reported. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA, else the growth of the process's peak RSS while the
method runs (``resource.getrusage``; CPU numbers are coarse).

Usage: python benchmarks/bench_kdgan.py [--steps 20] [--reps 3] [--batch 100] [--device cpu] [--threads N]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kdlab.data import build_datasets, make_loader
from kdlab.engine import save_classifier
from kdlab.methods import METHODS
from kdlab.models import build_model
from kdlab.runner import load_run_config


class _Fabric:
    """The two Fabric calls a method's step needs (device placement is done by hand here)."""

    def __init__(self, device):
        self.device = device

    def backward(self, loss):
        loss.backward()


def build(method: str, teacher: Path, device: torch.device, batch: int):
    objective = {"student": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 3.0}}} if method == "distill" else {}
    cfg = load_run_config([{
        "method": method, "teacher": {"checkpoint": str(teacher)}, "model": {"name": "mlp", "kwargs": {"hidden": [800, 800]}},
        "optim": {"name": "adam", "lr": 5e-4, "weight_decay": 0.0, "scheduler": "none"},
        "data": {"batch_size": batch}, "objective": objective,
    }])
    from kdlab.data import dataset_spec

    m = METHODS.get(method)(cfg, dataset_spec("fashion-mnist"))
    for name in m.players:
        m.players[name] = m.players[name].to(device)
    for name in m.frozen:
        m.frozen[name] = m.frozen[name].to(device)
    # optimizers were built on the same parameter objects; .to() on a CPU->CPU move keeps them
    m.fabric = _Fabric(device)
    m.train()
    return m


def timed(method, batches, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i, b in enumerate(batches):
        method.training_step(b, i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    data = build_datasets("fashion-mnist", val_size=0, n_per_class=max(1, args.batch * args.steps // 10 + 1), max_test=10)
    batches = [b.to(device) for b in make_loader(data.train, args.batch, True, 0)][: args.steps]
    with tempfile.TemporaryDirectory() as tmp:
        teacher = save_classifier(build_model("lenet"), Path(tmp) / "teacher.safetensors", data="fashion-mnist")
        times = {"distill": [], "kdgan": []}
        peaks = {}
        for name in ("distill", "kdgan"):
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            m = build(name, teacher, device, args.batch)
            timed(m, batches[:2], device)  # warm-up
            peaks[name] = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                           else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
            times[name + "_method"] = m
        for _ in range(args.reps):
            for name in ("distill", "kdgan"):
                times[name].append(timed(times[name + "_method"], batches, device))
    sps = {n: len(batches) / statistics.median(times[n]) for n in ("distill", "kdgan")}
    unit = "MiB (cuda max allocated)" if device.type == "cuda" else "MiB (peak RSS growth, coarse)"
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} steps={len(batches)} reps={args.reps}")
    print(f"DISTN (distill, CE + KD T=3): {sps['distill']:.2f} steps/s   peak memory {peaks['distill']:.0f} {unit}")
    print(f"KDGAN (schedule 1,1,1, k=5):  {sps['kdgan']:.2f} steps/s   peak memory {peaks['kdgan']:.0f} {unit}")
    print(f"ratio KDGAN / DISTN steps/s: {sps['kdgan'] / sps['distill']:.3f}")


if __name__ == "__main__":
    main()
