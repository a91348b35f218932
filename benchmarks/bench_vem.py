"""Cost of a VEM step against the base step, as a function of the Langevin steps K.

The setting of ``kdlab reproduce vem-ablation --scale small``: DCGAN teacher d = 32, student d = 4,
batch 64, data-free ``gan-compression`` with the MSE term; the VEM rows add ``objective.student.vem`` (Fig. 4
EBM with C channels) at K = 1, 5, 10. ``training_step`` is timed on the same batches, repetitions
interleaved, medians reported.

The reference unit ``fb`` is one forward + input-backward of the EBM on a batch (what one Langevin step
costs). A VEM step should cost the base step + K fb (the chain) + about 2 fb for the student's term
(E on t and t~, batch 2B, with a backward to s) + about 3 fb for the EBM's update (batch 2B, forward and
a backward to the parameters): overhead ~ (K + 5) fb and no more. The table reports the overhead in
fb units next to that expectation.

Peak memory: with ``--device cuda`` ``torch.cuda.max_memory_allocated`` per configuration; on CPU the
extra peak resident memory of each configuration in a fresh subprocess.

Usage: python benchmarks/bench_vem.py [--steps 10] [--reps 3] [--channels 8] [--threads N] [--device cpu]
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _steps import bench_parser, child_peak_mib, interleaved_times, extra_peak_rss_mib, ready_method, run_steps
from kdlab.data import build_datasets, make_loader
from kdlab.engine.generators import save_generator
from kdlab.experiments.grid import recipe
from kdlab.models import build_generator
from kdlab.models.ebm import ConvEnergy
from kdlab.runner import load_run_config

KS = (1, 5, 10)
BATCH = 64


def setup(args, tmp: Path):
    torch.manual_seed(0)
    path = tmp / "teacher.safetensors"
    if not path.exists():
        save_generator(build_generator("dcgan", 1, 28, d=32, latent_dim=100), path, data="fashion-mnist")
    data = build_datasets(name="fashion-mnist", val_size=0, n_per_class=10, transfer="none",
                          steps_per_epoch=args.steps, batch_size=BATCH)
    device = torch.device(args.device)
    batches = [b.to(device) for b in make_loader(data.transfer, BATCH, shuffle=False, seed=0)][:args.steps]
    return path, data, batches


def build(args, tmp: Path, path: Path, data, name: str):
    terms = '{mse: {weight: 1.0}}' if name == "base" else (
        f'{{mse: {{weight: 1.0}}, vem: {{weight: 0.1, channels: {args.channels}, steps: {int(name[1:])}}}}}')
    cfg = load_run_config([recipe("gan_student_mse")], [
        f"out_dir={tmp}", f"name=bench-{name}", f"teacher.checkpoint={path}", "model.kwargs.d=4",
        "data.transfer=none", f"data.steps_per_epoch={args.steps}", f"data.batch_size={BATCH}",
        f"objective.student={terms}", f"trainer.accelerator={args.device}", "trainer.tensorboard=false"])
    return ready_method(cfg, data, data.transfer)


def ebm_fb_seconds(args, reps: int = 20) -> float:
    """Median seconds of one forward + input-backward of the EBM on a batch (one Langevin step)."""
    device = torch.device(args.device)
    ebm = ConvEnergy((1, 28, 28), channels=args.channels).to(device)
    s = torch.randn(BATCH, 1, 28, 28, device=device)
    times = []
    for i in range(reps + 3):
        t0 = time.perf_counter()
        x = s.clone().requires_grad_(True)
        torch.autograd.grad(ebm(x, s).sum(), x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    args = bench_parser(__doc__, steps=10, channels=8).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="kdlab-bench-vem-"))
    path, data, batches = setup(args, tmp)
    if args.child:
        extra = extra_peak_rss_mib(lambda: run_steps(build(args, tmp, path, data, args.child), batches))
        print(json.dumps({"extra_mib": extra}))
        return
    names = ["base"] + [f"K{k}" for k in KS]
    methods = {n: build(args, tmp, path, data, n) for n in names}
    times, peak = interleaved_times(methods, batches, args.reps, args.device)
    times = {n: [t / len(batches) for t in v] for n, v in times.items()}
    if args.device != "cuda":
        for n in names:
            peak[n] = child_peak_mib(__file__, n, ["--tmp", str(tmp), "--steps", str(args.steps), "--channels",
                                                   str(args.channels), "--device", args.device]
                                     + (["--threads", str(args.threads)] if args.threads else []))
    fb = ebm_fb_seconds(args)
    med = {n: statistics.median(v) for n, v in times.items()}
    print(f"DCGAN d=32 teacher -> d=4 student, batch {BATCH}, EBM C={args.channels}, {args.steps} steps x {args.reps} "
          f"interleaved repetitions, device {args.device}, torch threads {torch.get_num_threads()}; "
          f"one EBM forward+input-backward (fb) = {1e3 * fb:.2f} ms")
    print(f"  {'config':<6} {'ms/step':>9} {'x base':>7} {'overhead/fb':>12} {'expected (K+5)':>15} {'peak MiB':>9}")
    for n in names:
        over = (med[n] - med["base"]) / fb
        exp = f"{int(n[1:]) + 5:>15d}" if n != "base" else f"{'-':>15}"
        print(f"  {n:<6} {1e3 * med[n]:9.2f} {med[n] / med['base']:7.2f} {over:12.1f} {exp} {peak[n]:9.1f}")


if __name__ == "__main__":
    main()
