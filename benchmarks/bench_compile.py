"""Eager vs compiled distillation steps for two model pairs, and the loop's other speed options:
channels-last, bf16 autocast (Fabric precision) and pinned host batches.

``--pair lenet``: a LeNet teacher (32-64-1024) -> LeNet (16, 32, fc 256) student, batch 128; ``--pair
resnet``: resnet56 -> resnet20, batch 256; both by default. CE + KD (T = 4) on Fashion-MNIST images.
Each configuration is the same ``distill`` method built with other ``trainer.*`` keys (default: ``eager
fp32`` and ``compile``; ``--only`` picks any of :data:`CONFIGS`); the timed loop copies each host batch
to the device (``non_blocking``) and runs ``training_step``, as the engine does. The first ``--warmup``
steps (compilation included) are not timed; repetitions are interleaved and medians reported. Compile
time is printed separately.

Usage: python benchmarks/bench_compile.py [--pair lenet|resnet|all] [--only "eager fp32,compile,bf16-mixed"]
       [--steps 30] [--warmup 5] [--reps 3] [--threads N] [--device cpu|cuda]

The teacher-output cache is off here (``trainer.teacher_cache=off``): the teacher's forward pass is part
of what is compiled and timed.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from _steps import bench_parser, ready_method
from kdlab.data import build_datasets, make_loader
from kdlab.engine import save_classifier
from kdlab.engine.speed import channels_last_batch
from kdlab.models import build_model
from kdlab.runner import load_run_config

#: teacher (name, kwargs) -> student (name, kwargs), batch size
PAIRS = {
    "lenet": (("lenet", {}), ("lenet", {"channels": [16, 32], "fc": 256}), 128),
    "resnet": (("resnet56", {}), ("resnet20", {}), 256),
}
#: configuration name -> trainer overrides (the first one run is the baseline of the "vs first" column)
CONFIGS = {
    "eager fp32": [],
    "channels_last": ["trainer.channels_last=true"],
    "compile": ["trainer.compile=default"],
    "bf16-mixed": ["trainer.precision=bf16-mixed"],
    "compile + bf16 + NHWC": ["trainer.compile=default", "trainer.precision=bf16-mixed", "trainer.channels_last=true"],
}


def main() -> None:
    ap = bench_parser(__doc__, steps=30, warmup=5)
    ap.add_argument("--only", default="eager fp32,compile", help="comma-separated configuration names")
    ap.add_argument("--pair", default="all", choices=[*sorted(PAIRS), "all"], help="teacher -> student pair")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for pair in (PAIRS if args.pair == "all" else [args.pair]):
        bench_pair(pair, args)


def bench_pair(pair: str, args) -> None:
    """Times every selected configuration on ``pair`` and prints one table."""
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="kdlab-bench-compile-"))
    torch.manual_seed(0)
    (t_name, t_kw), (s_name, s_kw), batch = PAIRS[pair]
    teacher = save_classifier(build_model(t_name, **t_kw), tmp / f"teacher-{pair}.safetensors", data="fashion-mnist")
    data = build_datasets(name="fashion-mnist", val_size=0, n_per_class=500)
    device = torch.device(args.device)
    pin = device.type == "cuda"
    host = [b.pin_memory() if pin else b for b in make_loader(data.train, batch, shuffle=True, seed=0)]
    host = host[:args.steps + args.warmup]
    only = [n.strip() for n in args.only.split(",")] if args.only else list(CONFIGS)
    unknown = [n for n in only if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"--only: unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
    names = [n for n in CONFIGS if n in only]
    methods, compile_s = {}, {}
    for n in names:
        cfg = load_run_config([{
            "method": "distill", "out_dir": str(tmp), "name": f"bench-{pair}-{names.index(n)}",
            "teacher": {"checkpoint": str(teacher)}, "data": {"val_size": 0, "batch_size": batch},
            "model": {"name": s_name, "kwargs": s_kw},
            "objective": {"student": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 4.0}}},
            "optim": {"name": "adam", "lr": 0.001, "weight_decay": 0.0},
            "trainer": {"accelerator": args.device, "tensorboard": False, "teacher_cache": "off"}}], CONFIGS[n])
        m = ready_method(cfg, data, data.train)
        t0 = time.perf_counter()
        for i, b in enumerate(host[:args.warmup]):
            b = b.to(device, non_blocking=True)
            m.training_step(channels_last_batch(b) if cfg.trainer.channels_last else b, i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        compile_s[n] = time.perf_counter() - t0
        methods[n] = (m, cfg.trainer.channels_last)
    times = {n: [] for n in names}
    for _ in range(args.reps):
        for n, (m, nhwc) in methods.items():
            t0 = time.perf_counter()
            for i, b in enumerate(host[args.warmup:]):
                b = b.to(device, non_blocking=True)
                m.training_step(channels_last_batch(b) if nhwc else b, i)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[n].append((time.perf_counter() - t0) / args.steps)
    med = {n: statistics.median(v) for n, v in times.items()}
    base = med[names[0]]
    dev = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"[{pair}] {t_name} {t_kw} -> {s_name} {s_kw}, CE + KD, batch {batch}, {args.steps} timed steps x {args.reps} interleaved reps, "
          f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, pinned host batches: {pin}")
    print(f"  {'configuration':<24} {'ms/step':>9} {'steps/s':>9} {'vs first':>9} {'warm-up s':>10}")
    for n in names:
        print(f"  {n:<24} {1e3 * med[n]:9.2f} {1 / med[n]:9.1f} {base / med[n]:8.2f}x {compile_s[n]:10.1f}")


if __name__ == "__main__":
    main()
