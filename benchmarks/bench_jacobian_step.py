"""Cost of Jacobian matching: steps/s of the ``jacobian`` method's training step for VGG-9 -> VGG-4.

Three steps, same teacher, student, data and batch (default 128, real Fashion-MNIST), interleaved
repetitions (median reported):

* ``kd``: CE + match activations (the plain distillation step, no input gradients);
* ``kd+jac``: the same + output-Jacobian matching on the teacher's top class (Prop. 1, section 4.1):
  one extra backward per network and a double backward through the student;
* ``kd+att-jac``: the same as ``kd`` + attention-map Jacobian matching at (pool2, pool2), window s/5
  (eq. 10): one backward through the first blocks of each network plus the double backward.

Prints steps/s, the ratios to ``kd`` (target: KD + Jacobian within 3x, i.e. ratio >= 1/3) and the
peak memory of each step kind (CUDA: ``torch.cuda.max_memory_allocated``; CPU: peak RSS growth
over the setup, measured in a fresh subprocess per kind so that one kind's peak does not hide
another's).

Usage: python benchmarks/bench_jacobian_step.py [--steps 20] [--reps 3] [--batch 128]
       [--width 1.0] [--threads N] [--device cpu|cuda]
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
from kdlab.engine import make_fabric, save_classifier
from kdlab.methods import JacobianDistill
from kdlab.models import build_model
from kdlab.runner import load_run_config

KINDS = {
    "kd": {"student": {"ce": {"weight": 1.0}, "logits": {"weight": 1.0}}},
    "kd+jac": {"student": {"ce": {"weight": 1.0}, "logits": {"weight": 1.0}, "jacobian": {"weight": 1.0, "select": "top"}}},
    "kd+att-jac": {"student": {"ce": {"weight": 1.0}, "logits": {"weight": 1.0},
                               "attention_jacobian": {"weight": 1.0, "layers": [["pool2", "pool2"]], "pool": 5}}},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier of both VGGs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)  # internal: CPU memory of one kind
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="kdlab-bench-jac-"))
    torch.manual_seed(0)
    teacher_path = save_classifier(build_model("vgg9", width=args.width), tmp / "teacher.safetensors", data="fashion-mnist")
    n = args.steps * args.batch
    data = build_datasets(name="fashion-mnist", val_size=0, n_per_class=max(1, n // 10))
    batches = [b.to(device) for b in make_loader(data.train, args.batch, shuffle=True, seed=0)]
    batches = batches[: args.steps]

    def method_for(kind: str):
        cfg = load_run_config([{
            "name": "bench", "method": "jacobian", "out_dir": str(tmp),
            "teacher": {"checkpoint": str(teacher_path)},
            "data": {"val_size": 0, "batch_size": args.batch},
            "model": {"name": "vgg4", "kwargs": {"width": args.width}},
            "objective": KINDS[kind],
            "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "none"},
            "trainer": {"epochs": 1, "accelerator": args.device, "tensorboard": False, "progress": False,
                        "teacher_cache": "off"},
        }])
        m = JacobianDistill(cfg, data.spec)
        m.setup(make_fabric(cfg.trainer, None))
        m.train()
        return m

    if args.only:  # subprocess: peak RSS growth of 2 steps of one kind, in MiB
        m = method_for(args.only)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for i, batch in enumerate(batches[:2]):
            m.training_step(batch, i)
        print(f"PEAK_MIB {(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024:.1f}")
        return

    times = {k: [] for k in KINDS}
    peak = {}
    if device.type != "cuda":
        import subprocess
        import sys

        for kind in KINDS:
            cmd = [sys.executable, __file__, "--only", kind, "--steps", "2", "--batch", str(args.batch),
                   "--width", str(args.width), "--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            peak[kind] = float(out.split("PEAK_MIB")[-1].split()[0])
    for rep in range(args.reps + 1):  # repetition 0 warms up and is dropped
        for kind in KINDS:
            torch.manual_seed(rep)
            m = method_for(kind)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            t0 = time.perf_counter()
            for i, batch in enumerate(batches):
                m.training_step(batch, i)
            _sync(device)
            dt = time.perf_counter() - t0
            if rep > 0:
                times[kind].append(dt)
            if rep == 0 and device.type == "cuda":
                peak[kind] = torch.cuda.max_memory_allocated(device) / 2**20
            del m

    med = {k: statistics.median(v) for k, v in times.items()}
    sps = {k: args.steps / v for k, v in med.items()}
    what = "peak CUDA memory" if device.type == "cuda" else "peak RSS growth over setup"
    print(f"VGG-9 -> VGG-4 (width {args.width}), batch {args.batch}, {args.steps} steps, {args.reps} interleaved "
          f"repetitions, device {args.device}, torch threads {torch.get_num_threads()}")
    for k in KINDS:
        print(f"  {k:<11} {sps[k]:8.2f} steps/s  ratio to kd {sps[k] / sps['kd']:.3f} "
              f"(time x{med[k] / med['kd']:.2f})  {what}: {peak[k]:.0f} MiB")
    for k in ("kd+jac", "kd+att-jac"):
        slow = med[k] / med["kd"]
        print(f"  {k}: {slow:.2f}x the time of a KD step (target <= 3x): {'OK' if slow <= 3 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
