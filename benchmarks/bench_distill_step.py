"""kdlab's distillation loop vs a plain PyTorch loop doing the same computation.

Both train the same student from the same frozen teacher with CE + KD (T = 4) at batch 128 on
real Fashion-MNIST, from the same in-memory data, for the same number of steps:

* ``plain``: a hand-written loop (teacher forward under no_grad, student forward, CE + KL, Adam).
* ``kdlab step``: the ``distill`` method's ``training_step`` called in a bare loop (method cost: the
  objective built from ``loss.terms``, the ``Student`` player, the term registry's dispatch).
* ``kdlab loop``: ``Trainer.fit`` for one epoch (method + Fabric + progress bar + metrics.jsonl +
  NaN checks + the end-of-epoch ``last.ckpt``): everything a user pays for.

Repetitions are interleaved (plain, step, loop, plain, ...) and the median of each is reported, so
machine noise hits all three alike, together with the median of the per-repetition ratios. Prints steps/s and the ratios kdlab / plain (target: the
overhead, 1 - ratio, at most 3% for the step).

Usage: python benchmarks/bench_distill_step.py [--steps 60] [--reps 3] [--teacher lenet]
       [--student mlp] [--threads N] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kdlab.data import build_datasets, make_loader
from kdlab.engine import Trainer, load_classifier, make_fabric, save_classifier
from kdlab.methods import Distill
from kdlab.models import build_model
from kdlab.runner import load_run_config


def plain_loop(teacher, student, batches, temperature: float) -> float:
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    teacher.eval()
    student.train()
    t0 = time.perf_counter()
    for b in batches:
        x, y = b.x, b.y
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = student(x)
        kd = F.kl_div(
            F.log_softmax(s_logits / temperature, dim=1), F.softmax(t_logits / temperature, dim=1), reduction="batchmean"
        ) * temperature**2
        loss = F.cross_entropy(s_logits, y) + kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--teacher", default="lenet")
    ap.add_argument("--student", default="mlp")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="kdlab-bench-"))
    torch.manual_seed(0)
    teacher_path = save_classifier(build_model(args.teacher), tmp / "teacher.safetensors", data="fashion-mnist")
    n = args.steps * args.batch
    cfg = load_run_config(
        [
            {
                "name": "bench",
                "method": "distill",
                "out_dir": str(tmp),
                "teacher": {"checkpoint": str(teacher_path)},
                "data": {"val_size": 0, "batch_size": args.batch, "n_per_class": n // 10},
                "model": {"name": args.student},
                "loss": {"terms": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 4.0}}},
                "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "none"},
                "trainer": {"epochs": 1, "accelerator": args.device, "tensorboard": False, "progress": True,
                            "limit_train_batches": args.steps},
            }
        ]
    )
    data = build_datasets(name="fashion-mnist", val_size=0, n_per_class=n // 10)
    device = torch.device(args.device)
    batches = [b.to(device) for b in make_loader(data.train, args.batch, shuffle=True, seed=0)]
    batches = batches[: args.steps]

    times = {"plain": [], "kdlab step": [], "kdlab loop": []}
    for rep in range(args.reps + 1):  # the first repetition warms up and is dropped
        torch.manual_seed(rep)
        teacher = load_classifier(teacher_path).to(device)
        student = build_model(args.student).to(device)
        dt_plain = plain_loop(teacher, student, batches, 4.0)

        fabric = make_fabric(cfg.trainer, None)
        method = Distill(cfg, data.spec)
        method.setup(fabric)
        method.train()
        t0 = time.perf_counter()
        for i, batch in enumerate(batches):
            method.training_step(batch, i)
        dt_step = time.perf_counter() - t0

        fabric = make_fabric(cfg.trainer, None)
        method = Distill(cfg, data.spec)
        trainer = Trainer(cfg, tmp / f"run{rep}", fabric)
        t0 = time.perf_counter()
        trainer.fit(method, data.train, None)
        dt_loop = time.perf_counter() - t0
        if rep > 0:
            times["plain"].append(dt_plain)
            times["kdlab step"].append(dt_step)
            times["kdlab loop"].append(dt_loop)

    med = {k: statistics.median(v) for k, v in times.items()}
    sps = {k: args.steps / v for k, v in med.items()}
    print(f"teacher {args.teacher} -> student {args.student}, batch {args.batch}, {args.steps} steps, "
          f"{args.reps} interleaved repetitions, device {args.device}, torch threads {torch.get_num_threads()}")
    for k in times:
        print(f"  {k:<11} {sps[k]:8.2f} steps/s   (median {med[k]:.3f} s; runs {', '.join(f'{t:.3f}' for t in times[k])})")
    for k in ("kdlab step", "kdlab loop"):
        ratio = sps[k] / sps["plain"]
        # each repetition's own ratio (plain and kdlab measured back to back) is less exposed to slow drifts
        paired = statistics.median(p / t for p, t in zip(times["plain"], times[k]))
        target = 3 if k == "kdlab step" else 5
        print(f"  {k} / plain = {ratio:.3f}  (overhead {100 * (1 - ratio):+.1f}%; median of paired ratios {paired:.3f}; "
              f"target <= {target}%)")


if __name__ == "__main__":
    main()
