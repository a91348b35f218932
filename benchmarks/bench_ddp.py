"""DDP on N CPU processes (gloo) vs 1 process: steps/s per process and in total, and the efficiency.

Runs ``kdlab distill`` end to end (the real CLI, Fabric's launcher, the engine loop) on the demo pair:
a LeNet teacher (fixed random weights: its values do not change the cost) -> MLP 784-100-100-10
student, CE + KD (T = 4), ``trainer.teacher_cache=off`` so the teacher runs in every step, on real
Fashion-MNIST, the same per-process batch in both runs (weak scaling: ``data.batch_size`` is per rank,
so N processes take N times the images per step). No validation split, so an epoch is training steps
plus the end-of-epoch ``last.ckpt``.

Timing: ``metrics.jsonl`` rows carry the rank-0 wall time; the last training row of each epoch is
logged at the epoch's last step, so the rate over epochs 2..E (the first epoch warms up) is
``(step_E - step_1) / (time_E - time_1)`` steps per second per process. Total = per process x N images
processed in parallel; efficiency = steps/s per process on N / steps/s on 1 (1.0 = perfect scaling).

Usage: python benchmarks/bench_ddp.py [--procs 2] [--threads 1] [--n-per-class 600] [--batch 128]
       [--epochs 3] [--reps 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


def _teacher(tmp: Path) -> Path:
    import torch

    from kdlab.engine import save_classifier
    from kdlab.models import build_model

    torch.manual_seed(0)
    return save_classifier(build_model("lenet", num_classes=10, in_channels=1, image_size=28),
                           tmp / "teacher.safetensors", data="fashion-mnist")


def _config(tmp: Path, teacher: Path, name: str, procs: int, args: argparse.Namespace) -> Path:
    trainer = {"epochs": args.epochs, "threads": args.threads, "progress": False, "tensorboard": False,
               "teacher_cache": "off", "log_every_n_steps": 50}
    if procs > 1:
        trainer.update(devices=procs, strategy="ddp")
    cfg = {
        "name": name, "method": "distill", "seed": 0, "out_dir": str(tmp),
        "teacher": {"checkpoint": str(teacher)},
        "data": {"name": "fashion-mnist", "val_size": 0, "n_per_class": args.n_per_class, "batch_size": args.batch,
                 "max_test": 500},
        "model": {"name": "mlp", "kwargs": {"hidden": [100, 100]}},
        "objective": {"student": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 4.0}}},
        "optim": {"name": "adam", "lr": 0.001, "weight_decay": 0.0},
        "trainer": trainer,
        "eval": {"latency": False, "noise_sigmas": [0.0]},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def steps_per_s(run: Path) -> float:
    """Steps per second per process over epochs 2.. (see the module docstring)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ends = {}
    for r in rows:
        if any(k.startswith("train/") for k in r):
            ends[r["epoch"]] = (r["step"], r["time"])  # the epoch's last training row wins
    (s0, t0), (s1, t1) = ends[min(ends)], ends[max(ends)]
    return (s1 - s0) / (t1 - t0)


def run(tmp: Path, teacher: Path, procs: int, rep: int, args: argparse.Namespace) -> float:
    name = f"p{procs}-r{rep}"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run([sys.executable, "-m", "kdlab.cli", "distill", str(_config(tmp, teacher, name, procs, args))],
                          capture_output=True, text=True, env=env, cwd=tmp)
    if proc.returncode:
        raise SystemExit(f"run {name} failed:\n{proc.stderr[-3000:]}")
    return steps_per_s(tmp / name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--n-per-class", type=int, default=600)
    ap.add_argument("--batch", type=int, default=128, help="per-process batch")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=1, help="repetitions, alternating 1 and N processes; medians")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        teacher = _teacher(tmp)
        one, many = [], []
        for rep in range(args.reps):
            one.append(run(tmp, teacher, 1, rep, args))
            many.append(run(tmp, teacher, args.procs, rep, args))
    s1, sn = statistics.median(one), statistics.median(many)
    n = args.procs
    print(f"demo pair (LeNet -> MLP 100-100, CE + KD, teacher_cache=off), batch {args.batch} per process, "
          f"{args.threads} thread(s) per process, {args.n_per_class * 10} images, epochs 2..{args.epochs} timed, "
          f"{os.cpu_count()} CPUs")
    print(f"{'processes':>10} {'steps/s per process':>20} {'steps/s total':>14} {'images/s total':>15}")
    print(f"{1:>10} {s1:>20.1f} {s1:>14.1f} {s1 * args.batch:>15.0f}")
    print(f"{n:>10} {sn:>20.1f} {sn * n:>14.1f} {sn * n * args.batch:>15.0f}")
    print(f"efficiency (per-process steps/s on {n} / on 1): {sn / s1:.2f}; speed-up in images/s: {sn * n / s1:.2f}x")
    if args.reps > 1:
        print(f"repetitions: 1 process {[round(x, 1) for x in one]}, {n} processes {[round(x, 1) for x in many]}")


if __name__ == "__main__":
    main()
