"""``make demo`` / ``kdlab demo``: the main job on real Fashion-MNIST.

Trains a LeNet teacher on the full training split (minus a 5,000-image validation split), then
distills an MLP 784-100-100-10 student from 100 images per class three ways (cross entropy only,
CE + Hinton KD, CE + logit matching), each with three seeds (seed ``s`` also draws the ``s``-th
100-per-class subset, the same one for every method: paired comparisons), and writes a
side-by-side report (mean +- std over seeds) to ``<out>/demo/report.md``.
A run whose directory already holds a ``summary.json`` for the same config is reused, not retrained
(:func:`kdlab.experiments.grid.run_cell`, the grid runner of ``kdlab reproduce``).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from rich.console import Console

STUDENTS = ("demo_ce", "demo_kd", "demo_logits")
SEEDS = (0, 1, 2)
QUICK = [
    "trainer.epochs=1",
    "data.val_size=1000",
    "data.max_test=2000",
    "eval.latency_iters=5",
]


def run_demo(out_dir: Path = Path("runs"), quick: bool = False, extra: Sequence[str] = ()) -> Path:
    """Run the demo; returns the path of the comparison report.

    Args:
        out_dir: parent of the run directories (``<out_dir>/demo-*``) and of ``<out_dir>/demo``.
        quick: a short smoke-test version (1 teacher epoch, a small validation and test split).
        extra: ``key=value`` overrides applied to every run.
    """
    from kdlab.experiments.grid import recipe, run_cell
    from kdlab.report import compare_runs

    console = Console(stderr=True)
    common: List[str] = [f"out_dir={out_dir}"] + (QUICK if quick else []) + list(extra)
    teacher_dir = run_cell([recipe("demo_teacher")], common + (["data.n_per_class=300"] if quick else []), console)
    student_common = common + [f"teacher.checkpoint={teacher_dir}"] + (["trainer.epochs=5"] if quick else [])
    runs = [teacher_dir]
    for student in STUDENTS:
        for seed in SEEDS[:1] if quick else SEEDS:
            name = f"{student.replace('_', '-')}-s{seed}"
            runs.append(run_cell([recipe(student)], student_common + [f"seed={seed}", f"data.subset_seed={seed}", f"name={name}"],
                                 console))
    return compare_runs(
        runs,
        Path(out_dir) / "demo",
        title="kdlab demo: LeNet teacher -> MLP student (100 images per class), real Fashion-MNIST",
    )
