"""Cost of each image-to-image algorithm's student step with and without VEM (VEM paper, Tables 1-4).

The rows of ``kdlab reproduce vem-table1 / vem-table2 / vem-table3 --scale small`` (each algorithm's
``alone`` and ``+ VEM`` row, read from the specs) on the offline tasks: a U-Net teacher ngf 32 (paired
``edges2fashion``) or a ResNet teacher ngf 32 with 9 blocks (unpaired ``fashion2digits``) or a SAGAN ngf 32
(GCC and CAGC, unconditional, discriminators from scratch), all random (the step's cost does not depend on the
weights), students at the tables' widths, batch 16, each algorithm's game as in its recipe; the ``+VEM`` rows
add ``objective.student.vem`` (Fig. 4 EBM with C channels, K = 10, lambda_MI of Table 6). ``training_step`` is timed on the same batches,
repetitions interleaved, medians reported; the ratio is algorithm + VEM over the algorithm alone.

Peak memory: with ``--device cuda`` ``torch.cuda.max_memory_allocated`` per configuration; on CPU the
extra peak resident memory of each configuration in a fresh subprocess.

Usage: python benchmarks/bench_i2i.py [--steps 10] [--reps 3] [--channels 8] [--threads N] [--device cpu]
"""
from __future__ import annotations

import functools
import json
import statistics
import tempfile
from pathlib import Path

import torch

from _steps import bench_parser, child_peak_mib, extra_peak_rss_mib, interleaved_times, ready_method, run_steps
from kdlab.data import build_datasets, make_loader
from kdlab.engine.generators import save_generator
from kdlab.experiments.specs import row_configs
from kdlab.models import build_generator, build_model
from kdlab.runner import load_run_config
from omegaconf import OmegaConf

BATCH = 16
TEACHERS = {"paired": ("edges2fashion", "unet", {"ngf": 32}),
            "unpaired": ("fashion2digits", "resnet_gen", {"ngf": 32, "n_blocks": 9}),
            "unconditional": ("fashion-mnist", "sagan", {"ngf": 32, "latent_dim": 128})}
#: the benchmarked algorithms: (spec, its row alone, its row + VEM, task)
ALGOS = {"omgd-paired": ("vem-table1", "alone", "vem", "paired"),
         "omgd": ("vem-table2", "omgd-alone", "omgd-vem", "unpaired"),
         "cat": ("vem-table2", "cat-alone", "cat-vem", "unpaired"),
         "gan-compression": ("vem-table2", "gc-alone", "gc-vem", "unpaired"),
         "gcc": ("vem-table3", "gcc-alone", "gcc-vem", "unconditional"),
         "cagc": ("vem-table3", "cagc-alone", "cagc-vem", "unconditional")}
ROWS = tuple(ALGOS)


@functools.lru_cache(maxsize=None)
def _rows(table: str):
    return row_configs(table, "small")


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
        if task == "unconditional" and not (tmp / "teacher-disc.ckpt").exists():  # GCC's D^t: a random SAGAN critic
            from kdlab.engine.checkpoint import save_checkpoint
            from kdlab.models import build_discriminator

            disc = build_discriminator("sagan", in_channels=1, image_size=28, ndf=kw["ngf"])
            save_checkpoint({"method": {"players": {"discriminator": disc.state_dict()}}}, tmp / "teacher-disc.ckpt")
        data = build_datasets(name=name, val_size=0, n_per_class=10, max_test=100)
        batches = [b.to(torch.device(args.device)) for b in make_loader(data.transfer, BATCH, shuffle=False, seed=0)]
        out[task] = (path, data, batches[:args.steps])
    return clf, out


def build(args, tmp: Path, clf: Path, tasks, name: str):
    algo, _, vem = name.partition("+")
    table, alone, with_vem, task = ALGOS[algo]
    path, data, _ = tasks[task]
    cfg = OmegaConf.to_container(_rows(table)[with_vem if vem else alone])
    for term in cfg["objective"]["student"].values():
        if isinstance(term, dict) and "extractor" in term:
            term["extractor"] = str(clf)
    if vem:
        cfg["objective"]["student"]["vem"]["channels"] = args.channels
    cfg.update(out_dir=str(tmp), name=f"bench-{name.replace('+', '-')}")
    cfg["teacher"]["checkpoint"], cfg["eval"]["extractor"] = str(path), str(clf)
    # the teachers here are files, not runs with a discriminator: the critics start at random, GCC's D^t is random
    cfg["players"].update({k: None for k in ("disc_init", "teacher_disc") if k in cfg["players"]})
    if algo == "gcc":
        cfg["players"]["teacher_disc"] = str(tmp / "teacher-disc.ckpt")
    cfg["data"].update(batch_size=BATCH, n_per_class=10)
    cfg["trainer"].update(accelerator=args.device, tensorboard=False)
    return ready_method(load_run_config([cfg]), data, data.transfer)


def main() -> None:
    args = bench_parser(__doc__, steps=10, channels=8).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="kdlab-bench-i2i-"))
    clf, tasks = setup(args, tmp)
    if args.child:
        algo = args.child.partition("+")[0]
        batches = tasks[ALGOS[algo][3]][2]
        extra = extra_peak_rss_mib(lambda: run_steps(build(args, tmp, clf, tasks, args.child), batches))
        print(json.dumps({"extra_mib": extra}))
        return
    print(f"batch {BATCH}, EBM C={args.channels}, {args.steps} steps x {args.reps} interleaved repetitions, device "
          f"{args.device}, torch threads {torch.get_num_threads()}")
    print(f"  {'algorithm':<16} {'ms/step':>9} {'+VEM ms/step':>13} {'ratio':>6} {'peak MiB':>9} {'+VEM peak MiB':>14}")
    for algo in ROWS:
        names = [algo, f"{algo}+vem"]
        batches = tasks[ALGOS[algo][3]][2]
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
