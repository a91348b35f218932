"""Cost of a MosaicKD iteration against KD on the same out-of-domain images, same student.

Both methods are built as in ``kdlab reproduce mosaickd --scale small`` (Fashion-MNIST LeNet teacher,
LeNet (16, 32, fc 256) student, MNIST digits as OOD data, batch 128) and their ``training_step`` is
timed on the same OOD batches. One MosaicKD iteration = ``synth_every`` (5) training steps: one
discriminator step and one generator step (each through the teacher and, for G, the student), then
five student steps on 128 synthetic + 128 OOD images; it is compared with five KD-on-OOD steps
(128 OOD images each). Repetitions are interleaved; medians are reported.

Peak memory: with ``--device cuda`` ``torch.cuda.max_memory_allocated``; on CPU each method's extra
peak resident memory over the loaded data, in a fresh subprocess (:func:`_steps.extra_peak_rss_mib`).

Usage: python benchmarks/bench_mosaickd.py [--iters 6] [--reps 3] [--threads N] [--device cpu]
"""
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import torch

from _steps import bench_parser, child_peak_mib, interleaved_times, extra_peak_rss_mib, ready_method, run_steps
from kdlab.data import build_datasets, make_loader
from kdlab.engine import save_classifier
from kdlab.experiments.grid import recipe
from kdlab.models import build_model
from kdlab.runner import load_run_config

METHOD_RECIPES = {"kd-ood": "mosaickd_kd", "mosaickd": "mosaickd"}


def setup(args, tmp: Path):
    torch.manual_seed(0)
    path = tmp / "teacher.safetensors"
    if not path.exists():
        save_classifier(build_model("lenet"), path, data="fashion-mnist")
    steps = args.iters * 5
    data = build_datasets(name="fashion-mnist", val_size=0, n_per_class=10, transfer="mnist-digits",
                          transfer_n=steps * 128)
    device = torch.device(args.device)
    batches = [b.to(device) for b in make_loader(data.transfer, 128, shuffle=True, seed=0)][:steps]
    return path, data, batches


def build(args, tmp: Path, path: Path, data, name: str):
    cfg = load_run_config([recipe(METHOD_RECIPES[name])], [
        f"out_dir={tmp}", f"name=bench-{name}", f"teacher.checkpoint={path}", "data.val_size=0",
        "data.n_per_class=10", f"trainer.accelerator={args.device}", "trainer.tensorboard=false"])
    return ready_method(cfg, data, data.transfer)



def main() -> None:
    args = bench_parser(__doc__, iters=6).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="kdlab-bench-mosaic-"))
    path, data, batches = setup(args, tmp)
    if args.child:  # one method's extra peak RSS, as JSON
        extra = extra_peak_rss_mib(lambda: run_steps(build(args, tmp, path, data, args.child), batches))
        print(json.dumps({"extra_mib": extra}))
        return
    methods = {n: build(args, tmp, path, data, n) for n in METHOD_RECIPES}
    times, peak = interleaved_times(methods, batches, args.reps, args.device)
    if args.device != "cuda":
        for n in methods:
            peak[n] = child_peak_mib(__file__, n, ["--tmp", str(tmp), "--iters", str(args.iters), "--device", args.device]
                                     + (["--threads", str(args.threads)] if args.threads else []))
    med = {n: statistics.median(v) for n, v in times.items()}
    print(f"LeNet teacher -> LeNet(16, 32, fc 256) student, OOD MNIST digits, batch 128, {args.iters} iterations "
          f"(5 student steps each), {args.reps} interleaved repetitions, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    for n in methods:
        print(f"  {n:<9} {args.iters / med[n]:7.2f} iterations/s  ({5 * args.iters / med[n]:7.2f} student steps/s)  "
              f"extra peak memory {peak[n]:8.1f} MiB")
    print(f"  mosaickd / kd-ood time per iteration = {med['mosaickd'] / med['kd-ood']:.2f}x")


if __name__ == "__main__":
    main()
