"""The teacher-output cache: a distillation step with the cache vs without vs a plain PyTorch loop.

Three pairs on real Fashion-MNIST (random-init teachers: the cost does not depend on the weights):

* ``demo``: LeNet (3.1 M params) -> MLP 784-100-100-10, CE + KD (T = 4), batch 128;
* ``conv``: ResNet-20 -> LeNet (16, 32, fc 256), CE + KD, batch 128;
* ``jacobian``: LeNet -> MLP, CE + output-Jacobian matching (top class), batch 128.

Rows: ``plain`` is a hand-written loop that runs the teacher every step (KD pairs only);
``uncached`` and ``cached`` are the ``distill`` method's ``training_step`` with
``trainer.teacher_cache=off`` / ``on`` on the same batches. Repetitions are interleaved and
medians reported; the cache's one-off build time is printed beside them (it is paid once per run,
a one-epoch pass of the teacher). Targets: cached >= 10x plain on ``demo``, >= 1.4x on ``conv``,
cached >= 2x uncached on ``jacobian``.

Build cost (``--build``, issue 29): on a transfer set whose last batch is partial, interleaved: a plain
no-grad teacher pass over the loader's batches, the one-pass build (:func:`build_teacher_cache`, the
default; in memory a run fills the same table during epoch 1 instead) and the exact build
(``trainer.teacher_cache_exact``: one table per batch size). Target: one pass <= 1.1x the plain pass.
The amortised ratios over 1, 5 and 40 epochs and kdlab cached vs a plain cached loop are in
``bench_distill_step.py``.

Usage: python benchmarks/bench_cache.py [--pairs demo,conv,jacobian] [--steps 40] [--reps 3] [--threads N]
       [--device cpu|cuda] [--build]
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _steps import bench_parser, interleaved_times, paired_ratio, ready_method
from kdlab.data import build_datasets, make_loader
from kdlab.engine import load_classifier, save_classifier
from kdlab.models import build_model
from kdlab.games.teacher_cache import build_teacher_cache
from kdlab.runner import load_run_config

KD = {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 4.0}}
#: pair -> (teacher (name, kwargs), student (name, kwargs), terms)
PAIRS = {
    "demo": (("lenet", {}), ("mlp", {"hidden": [100, 100]}), KD),
    "conv": (("resnet20", {}), ("lenet", {"channels": [16, 32], "fc": 256}), KD),
    "jacobian": (("lenet", {}), ("mlp", {"hidden": [100, 100]}), {"ce": {"weight": 1.0}, "jacobian": {"weight": 1.0}}),
}


class Plain:
    """The hand-written loop as an object with ``training_step`` (teacher under no_grad every step)."""

    def __init__(self, teacher, student, temperature: float = 4.0) -> None:
        self.teacher, self.student, self.T = teacher.eval(), student.train(), temperature
        self.opt = torch.optim.Adam(student.parameters(), lr=1e-3)

    def training_step(self, b, i):
        with torch.no_grad():
            t = self.teacher(b.x)
        s = self.student(b.x)
        kd = F.kl_div(F.log_softmax(s / self.T, 1), F.softmax(t / self.T, 1), reduction="batchmean") * self.T ** 2
        loss = F.cross_entropy(s, b.y) + kd
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss}


def bench_pair(pair: str, args, tmp: Path) -> None:
    (tname, tkw), (sname, skw), terms = PAIRS[pair]
    torch.manual_seed(0)
    teacher_path = save_classifier(build_model(tname, **tkw), tmp / f"{pair}-teacher.safetensors", data="fashion-mnist")
    n = args.steps * args.batch
    data = build_datasets(name="fashion-mnist", val_size=0, n_per_class=n // 10)
    device = torch.device(args.device)
    batches = [b.to(device) for b in make_loader(data.train, args.batch, shuffle=True, seed=0)][: args.steps]

    def method(cache: str):
        cfg = load_run_config([{
            "name": "bench", "method": "distill", "out_dir": str(tmp), "teacher": {"checkpoint": str(teacher_path)},
            "data": {"val_size": 0, "batch_size": args.batch, "n_per_class": n // 10},
            "model": {"name": sname, "kwargs": skw}, "objective": {"student": terms},
            "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "none"},
            "trainer": {"epochs": 1, "accelerator": args.device, "tensorboard": False, "progress": False,
                        "teacher_cache": cache}}])
        m = ready_method(cfg, data, data.train)
        t0 = time.perf_counter()
        m.on_fit_start(data.train, tmp / f"{pair}-{cache}", sorted({len(b) for b in batches}))
        m.prebuild_teacher_cache()  # a run fills it during epoch 1; here every timed step reads it
        return m, time.perf_counter() - t0

    uncached, _ = method("off")
    cached, build_s = method("on")
    runs = {"uncached": uncached, "cached": cached}
    if terms is KD:
        torch.manual_seed(0)
        runs = {"plain": Plain(load_classifier(teacher_path).to(device), build_model(sname, **skw).to(device)), **runs}
    times, _ = interleaved_times(runs, batches, args.reps, args.device)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{pair}: {tname} -> {sname}, terms {'+'.join(terms)}, batch {args.batch}, {len(batches)} steps, "
          f"{args.reps} interleaved repetitions, {args.device}, {torch.get_num_threads()} threads")
    for k, v in med.items():
        print(f"  {k:<9} {len(batches) / v:9.1f} steps/s   (median {v:.3f} s)")
    base = "plain" if "plain" in med else "uncached"
    target = {"demo": 10.0, "conv": 1.4, "jacobian": 2.0}[pair]
    ratio = med[base] / med["cached"]
    print(f"  cached / {base} = {ratio:.2f}x (target >= {target}x: {'met' if ratio >= target else 'NOT met'}); "
          f"uncached / plain = {med['plain'] / med['uncached']:.2f}x" if base == "plain" else
          f"  cached / {base} = {ratio:.2f}x (target >= {target}x: {'met' if ratio >= target else 'NOT met'})")
    print(f"  cache build (once per run, {len(data.train)} rows): {build_s:.2f} s "
          f"= {build_s / (med['uncached'] / len(batches)):.0f} uncached steps")


def bench_build(pair: str, args, tmp: Path) -> None:
    """Cache build vs one plain teacher pass over the same rows (the last batch partial)."""
    (tname, tkw), (sname, skw), terms = PAIRS[pair]
    torch.manual_seed(0)
    teacher_path = save_classifier(build_model(tname, **tkw), tmp / f"{pair}-bteacher.safetensors", data="fashion-mnist")
    n_per_class = (args.steps * args.batch - args.batch // 4) // 10
    data = build_datasets(name="fashion-mnist", val_size=0, n_per_class=n_per_class)
    n = len(data.train)
    cfg = load_run_config([{
        "name": "bench", "method": "distill", "out_dir": str(tmp), "teacher": {"checkpoint": str(teacher_path)},
        "data": {"val_size": 0, "batch_size": args.batch, "n_per_class": n_per_class},
        "model": {"name": sname, "kwargs": skw}, "objective": {"student": terms},
        "trainer": {"epochs": 1, "accelerator": args.device, "tensorboard": False, "progress": False}}])
    m = ready_method(cfg, data, data.train)
    device = torch.device(args.device)
    teacher = m.frozen["teacher"]
    sizes = [args.batch, n % args.batch]

    def compute(b):
        return m.teacher_forward(m.objective.prepare_input(b.x, b), b)

    def plain():
        with torch.no_grad():
            for b in make_loader(data.train, args.batch, shuffle=False, seed=0):
                teacher(b.x.to(device))

    runs = {"plain teacher pass": plain,
            "one-pass build": lambda: build_teacher_cache(data.train, compute, sizes, {}, prepare=lambda b: b.to(device)),
            "exact build": lambda: build_teacher_cache(data.train, compute, sizes, {}, exact=True,
                                                       prepare=lambda b: b.to(device))}
    times = {k: [] for k in runs}
    names = list(runs)
    for rep in range(args.reps + 1):  # the first repetition warms up and is dropped
        for k in names[rep % len(names):] + names[:rep % len(names)]:
            t0 = time.perf_counter()
            runs[k]()
            if torch.cuda.is_initialized():
                torch.cuda.synchronize()
            if rep:
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{pair} build: {tname}, terms {'+'.join(terms)}, {n} rows in batches of {sizes} , {args.reps} "
          f"interleaved repetitions, {args.device}, {torch.get_num_threads()} threads")
    base = times["plain teacher pass"]
    for k, v in med.items():
        paired = paired_ratio(times[k], base)
        print(f"  {k:<19} {v:7.3f} s   {v / med['plain teacher pass']:5.2f}x the plain pass   "
              f"(median of paired ratios {paired:.2f}x; runs {', '.join(f'{t:.2f}' for t in times[k])} s)")
    ok = med["one-pass build"] <= 1.1 * med["plain teacher pass"]
    print(f"  one-pass build / plain pass: target <= 1.10x: {'met' if ok else 'NOT met'}")


def main() -> None:
    ap = bench_parser(__doc__, steps=40, batch=128)
    ap.add_argument("--pairs", default="demo,conv,jacobian")
    ap.add_argument("--build", action="store_true", help="the build cost instead of the step rates")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="kdlab-bench-cache-"))
    for pair in args.pairs.split(","):
        if pair not in PAIRS:
            raise SystemExit(f"unknown pair {pair!r}; accepted: {', '.join(PAIRS)}")
        (bench_build if args.build else bench_pair)(pair, args, tmp)


if __name__ == "__main__":
    main()
