"""Cost of OMGD with its online teachers vs the frozen-teacher student (issue 25, Benchmark).

Both on the paired task ``edges2fashion`` (28 px), batch 16, the same student (U-Net ngf 16) and the same student
objective (SSIM, style, feature L1, TV, channel distillation; feature network = a random LeNet-5 at 28 px):

* ``online``: method ``omgd`` (recipe ``i2i_omgd.yaml``): each step also trains the wide (U-Net ngf 64) and the deep
  (``unet_deep`` ngf 16) teachers against one PatchGAN (ndf 128), and distils from both;
* ``frozen``: method ``i2i-distill`` (recipe ``i2i_omgd_frozen.yaml``) from one frozen random U-Net ngf 64 (the wide
  teacher's architecture), no discriminator.

``training_step`` is timed on the same batches, repetitions interleaved, medians reported; ``ratio`` is the online
step time over the frozen one (the frozen student's steps/s over the online's). Peak memory: with ``--device cuda``
``torch.cuda.max_memory_allocated`` per configuration; on CPU the extra peak resident memory of each configuration
in a fresh subprocess.

Usage: python benchmarks/bench_omgd.py [--steps 5] [--reps 3] [--threads N] [--device cpu|cuda]
"""
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import torch

from _steps import bench_parser, child_peak_mib, extra_peak_rss_mib, interleaved_times, ready_method, run_steps
from kdlab.data import build_datasets, make_loader
from kdlab.engine.checkpoint import save_classifier
from kdlab.engine.generators import save_generator
from kdlab.experiments.grid import recipe
from kdlab.models import build_generator, build_model
from kdlab.runner import load_run_config

BATCH = 16
ROWS = {"online": "i2i_omgd", "frozen": "i2i_omgd_frozen"}


def setup(args, tmp: Path):
    torch.manual_seed(0)
    clf, teacher = tmp / "classifier.safetensors", tmp / "teacher.safetensors"
    if not clf.exists():
        save_classifier(build_model("lenet", num_classes=10, in_channels=1, image_size=28), clf, data="fashion-mnist")
    if not teacher.exists():
        save_generator(build_generator("unet", 1, 28, in_channels=1, ngf=64), teacher, data="edges2fashion")
    data = build_datasets(name="edges2fashion", val_size=0, n_per_class=10, max_test=100)
    batches = [b.to(torch.device(args.device)) for b in make_loader(data.transfer, BATCH, shuffle=False, seed=0)]
    return clf, teacher, data, batches[:args.steps]


def build(args, tmp: Path, clf: Path, teacher: Path, data, name: str):
    over = [f"out_dir={tmp}", f"name=bench-omgd-{name}", f"data.batch_size={BATCH}", "data.n_per_class=10",
            f"trainer.accelerator={args.device}", "trainer.tensorboard=false", "eval.extractor=null",
            f"objective.student.style.extractor={clf}", f"objective.student.perceptual.extractor={clf}"]
    if name == "frozen":
        over.append(f"teacher.checkpoint={teacher}")
    cfg = load_run_config([recipe(ROWS[name])], over)
    return ready_method(cfg, data, data.transfer)


def main() -> None:
    args = bench_parser(__doc__, steps=5).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="kdlab-bench-omgd-"))
    clf, teacher, data, batches = setup(args, tmp)
    if args.child:
        extra = extra_peak_rss_mib(lambda: run_steps(build(args, tmp, clf, teacher, data, args.child), batches))
        print(json.dumps({"extra_mib": extra}))
        return
    methods = {n: build(args, tmp, clf, teacher, data, n) for n in ROWS}
    times, peak = interleaved_times(methods, batches, args.reps, args.device)
    if args.device != "cuda":
        for n in ROWS:
            peak[n] = child_peak_mib(__file__, n, ["--tmp", str(tmp), "--steps", str(args.steps), "--device", args.device]
                                     + (["--threads", str(args.threads)] if args.threads else []))
    med = {n: statistics.median(t) / len(batches) for n, t in times.items()}
    print(f"batch {BATCH}, {len(batches)} steps x {args.reps} interleaved repetitions, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  {'student':<8} {'ms/step':>9} {'steps/s':>8} {'peak MiB':>9}")
    for n in ROWS:
        print(f"  {n:<8} {1e3 * med[n]:9.2f} {1 / med[n]:8.2f} {peak[n]:9.1f}")
    print(f"  online / frozen step time: {med['online'] / med['frozen']:.2f}x; peak memory "
          f"{peak['online'] / max(peak['frozen'], 1e-9):.2f}x")
    print(json.dumps({"ms_per_step": {n: 1e3 * v for n, v in med.items()}, "peak_mib": peak,
                      "ratio": med["online"] / med["frozen"], "device": args.device}))


if __name__ == "__main__":
    main()
