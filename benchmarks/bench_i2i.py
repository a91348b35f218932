"""Cost of each image-to-image algorithm's student step with and without VEM (VEM paper, Tables 1-4).

The setting of ``kdlab reproduce vem-table1 / vem-table2 --scale small`` on the offline tasks: a U-Net
teacher ngf 32 (paired ``edges2fashion``) or a ResNet teacher ngf 32 with 9 blocks (unpaired
``fashion2digits``) or a SAGAN ngf 32 (GCC, unconditional, discriminator from scratch), all random (the step's cost does not depend on the weights), students at the
tables' widths, batch 16, the PatchGAN game on; the ``+VEM`` rows add ``objective.student.vem`` (Fig. 4 EBM
with C channels, K = 10, lambda_MI of Table 6). ``training_step`` is timed on the same batches,
repetitions interleaved, medians reported; the ratio is algorithm + VEM over the algorithm alone.

Peak memory: with ``--device cuda`` ``torch.cuda.max_memory_allocated`` per configuration; on CPU the
extra peak resident memory of each configuration in a fresh subprocess.

Usage: python benchmarks/bench_i2i.py [--steps 10] [--reps 3] [--channels 8] [--threads N] [--device cpu]
"""
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import torch

from _steps import bench_parser, child_peak_mib, extra_peak_rss_mib, interleaved_times, ready_method, run_steps
from kdlab.data import build_datasets, make_loader
from kdlab.engine.generators import save_generator
from kdlab.experiments.grid import recipe
from kdlab.experiments.vem_i2i import ALGOS, student_terms
from kdlab.models import build_generator, build_model
from kdlab.runner import load_run_config

BATCH = 16
TEACHERS = {"paired": ("edges2fashion", "unet", {"ngf": 32}),
            "unpaired": ("fashion2digits", "resnet_gen", {"ngf": 32, "n_blocks": 9}),
            "unconditional": ("fashion-mnist", "sagan", {"ngf": 32, "latent_dim": 128})}
#: the benchmarked algorithms (ALGOS of the experiment)
ROWS = ("omgd-paired", "omgd", "cat", "gan-compression", "gcc", "cagc")


def setup(args, tmp: Path):
    torch.manual_seed(0)
    out = {}
    clf = tmp / "classifier.safetensors"
    if not clf.exists():
        from kdlab.engine.checkpoint import save_classifier

        save_classifier(build_model("lenet", num_classes=10, in_channels=1, image_size=28), clf, data="fashion-mnist")
    for task, (name, arch, kw) in TEACHERS.items():
        path = tmp / f"teacher-{task}.safetensors"
        if not path.exists():
            image = {"in_channels": 1} if task != "unconditional" else {}
            save_generator(build_generator(arch, 1, 28, **image, **kw), path, data=name)
        data = build_datasets(name=name, val_size=0, n_per_class=10, max_test=100)
        batches = [b.to(torch.device(args.device)) for b in make_loader(data.transfer, BATCH, shuffle=False, seed=0)]
        out[task] = (path, data, batches[:args.steps])
    return clf, out


def build(args, tmp: Path, clf: Path, tasks, name: str):
    algo, _, vem = name.partition("+")
    label, rec, task, lam, width = ALGOS[algo]
    path, data, _ = tasks[task]
    sc = {"vem": {"channels": args.channels}, "crd": {"k": 1024}}
    terms = student_terms(rec, "vem" if vem else "alone", lam, sc, clf)
    _, arch, kw = TEACHERS[task]
    kw = {**kw, "ngf": int(kw["ngf"] * width)}
    cfg = load_run_config([recipe(rec)], [
        f"out_dir={tmp}", f"name=bench-{name.replace('+', '-')}", f"teacher.checkpoint={path}", f"eval.extractor={clf}",
        f"model.kwargs={json.dumps(kw)}", f"objective.student={json.dumps(terms)}", f"data.batch_size={BATCH}",
        "data.n_per_class=10", f"trainer.accelerator={args.device}", "trainer.tensorboard=false"]
        + ["players.disc_init=null"]  # the teachers here are files, not runs with a discriminator
        + ([f"players.disc_d={TEACHERS[task][2]['ngf']}"] if task == "unconditional" else []))
    return ready_method(cfg, data, data.transfer)


def main() -> None:
    args = bench_parser(__doc__, steps=10, channels=8).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="kdlab-bench-i2i-"))
    clf, tasks = setup(args, tmp)
    if args.child:
        algo = args.child.partition("+")[0]
        batches = tasks[ALGOS[algo][2]][2]
        extra = extra_peak_rss_mib(lambda: run_steps(build(args, tmp, clf, tasks, args.child), batches))
        print(json.dumps({"extra_mib": extra}))
        return
    print(f"batch {BATCH}, EBM C={args.channels}, {args.steps} steps x {args.reps} interleaved repetitions, device "
          f"{args.device}, torch threads {torch.get_num_threads()}")
    print(f"  {'algorithm':<16} {'ms/step':>9} {'+VEM ms/step':>13} {'ratio':>6} {'peak MiB':>9} {'+VEM peak MiB':>14}")
    for algo in ROWS:
        names = [algo, f"{algo}+vem"]
        batches = tasks[ALGOS[algo][2]][2]
        methods = {n: build(args, tmp, clf, tasks, n) for n in names}
        times, peak = interleaved_times(methods, batches, args.reps, args.device)
        if args.device != "cuda":
            for n in names:
                peak[n] = child_peak_mib(__file__, n, ["--tmp", str(tmp), "--steps", str(args.steps), "--channels",
                                                       str(args.channels), "--device", args.device]
                                         + (["--threads", str(args.threads)] if args.threads else []))
        med = {n: statistics.median(t) / len(batches) for n, t in times.items()}
        print(f"  {algo:<16} {1e3 * med[algo]:9.2f} {1e3 * med[names[1]]:13.2f} {med[names[1]] / med[algo]:6.2f} "
              f"{peak[algo]:9.1f} {peak[names[1]]:14.1f}")


if __name__ == "__main__":
    main()
