"""Cost of each distillation term's training step relative to the KD step (same models, same batches).

Every row of ``kdlab reproduce loss-families`` (its spec's 500-images-per-class column at small scale,
:func:`kdlab.experiments.specs.row_configs`: the same term configs and feature pairs; CRD's k and FT's
paraphraser steps fitted to the benchmark's images and steps as the spec fits them to its budgets) is built as a ``distill`` method on one VGG-9 (width 0.25) teacher ->
VGG-4 (width 0.25) student pair and its ``training_step`` is timed on the same real Fashion-MNIST
batches (batch 128). Repetitions are interleaved (every row once, then again ...) and the median of
each row is reported with its ratio to the KD row's median: steps/s(term) / steps/s(KD).

Peak memory: with ``--device cuda`` the peak of ``torch.cuda.max_memory_allocated`` over the timed
steps; on CPU, each row is run once more in a fresh subprocess, and the peak resident memory that
building its method (term modules, optimizer state) and running its steps adds to the loaded data
is reported (:func:`_steps.extra_peak_rss_mib`).

Usage: python benchmarks/bench_terms.py [--steps 20] [--reps 3] [--batch 128] [--rows kd,crd,...]
       [--width 0.25] [--threads N] [--device cpu] [--no-memory]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from _steps import extra_peak_rss_mib, ready_method, run_steps
from kdlab.data import build_datasets, make_loader
from kdlab.engine import save_classifier
from kdlab.experiments.specs import row_configs
from kdlab.models import build_model
from kdlab.runner import load_run_config


def setup(args, tmp: Path):
    torch.manual_seed(0)
    teacher = build_model("vgg9", width=args.width)
    path = tmp / "teacher.safetensors"
    if not path.exists():
        save_classifier(teacher, path, data="fashion-mnist")
    n = args.steps * args.batch
    data = build_datasets(name="fashion-mnist", val_size=0, n_per_class=n // 10)
    device = torch.device(args.device)
    batches = [b.to(device) for b in make_loader(data.train, args.batch, shuffle=True, seed=0)][: args.steps]
    table = {}
    for row, cfg in row_configs("loss-families", "small", "full").items():
        terms = OmegaConf.to_container(cfg.objective.student)
        if "crd" in terms:  # negatives from the benchmark's own images
            terms["crd"]["k"] = min(terms["crd"]["k"], len(data.train) - 1)
        if "ft" in terms:  # the spec's ~10% of the student updates
            terms["ft"]["paraphraser_steps"] = max(1, args.steps // 10)
        table[row] = (cfg.label, terms)
    return path, data, batches, table


def build(args, tmp: Path, path: Path, data, terms):
    cfg = load_run_config([{
        "name": "bench", "method": "distill", "out_dir": str(tmp), "teacher": {"checkpoint": str(path)},
        "data": {"val_size": 0, "batch_size": args.batch, "n_per_class": (args.steps * args.batch) // 10},
        "model": {"name": "vgg4", "kwargs": {"width": args.width}}, "objective": {"student": terms},
        "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "none"},
        "trainer": {"epochs": 1, "accelerator": args.device, "tensorboard": False, "progress": False,
                        "teacher_cache": "off"},
    }])
    return ready_method(cfg, data, data.train)



def memory_child(args) -> None:
    """Subprocess: one row's extra peak RSS (MiB) of building its method and running its steps, as JSON."""
    tmp = Path(args.tmp)
    path, data, batches, table = setup(args, tmp)
    # data and batches loaded: the method, its term modules, optimizer state and steps on top of them
    extra = extra_peak_rss_mib(lambda: run_steps(build(args, tmp, path, data, table[args.child][1]), batches))
    print(json.dumps({"extra_mib": extra}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--rows", default="")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return memory_child(args)

    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="kdlab-bench-terms-"))
    path, data, batches, table = setup(args, tmp)
    names = [r for r in table if not args.rows or r in args.rows.split(",")]
    if "kd" not in names:
        names.insert(0, "kd")
    methods = {r: build(args, tmp, path, data, table[r][1]) for r in names}
    times = {r: [] for r in names}
    peak = {}
    for rep in range(args.reps + 1):  # the first repetition warms up and is dropped
        for r in names:
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            dt = run_steps(methods[r], batches)
            if rep > 0:
                times[r].append(dt)
            if args.device == "cuda":
                peak[r] = torch.cuda.max_memory_allocated() / 2**20
    if args.device != "cuda" and not args.no_memory:
        for r in names:
            cmd = [sys.executable, __file__, "--child", r, "--tmp", str(tmp), "--steps", str(args.steps),
                   "--batch", str(args.batch), "--width", str(args.width), "--device", args.device]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            peak[r] = json.loads(out)["extra_mib"]

    kd = statistics.median(times["kd"])
    print(f"VGG-9 (width {args.width}) -> VGG-4 (width {args.width}), batch {args.batch}, {args.steps} steps, "
          f"{args.reps} interleaved repetitions, device {args.device}, torch threads {torch.get_num_threads()}")
    what = "peak MiB" if args.device == "cuda" else "extra peak RSS MiB"
    print(f"  {'row':<10} {'steps/s':>8} {'vs KD':>7} {what:>19}")
    for r in names:
        med = statistics.median(times[r])
        print(f"  {r:<10} {args.steps / med:8.2f} {kd / med:7.3f} {peak.get(r, float('nan')):19.1f}")


if __name__ == "__main__":
    main()
