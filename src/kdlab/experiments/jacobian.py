"""The Jacobian paper's tables (Srinivas & Fleuret, ICML 2018) on Fashion-MNIST (or CIFAR-100 with
``data.name=cifar100`` where that data exists): ``kdlab reproduce jacobian-table{2,3,4,5}``. Table 1 is
a declarative experiment spec, ``recipes/experiments/jacobian-table1.yaml`` (its rows, columns, scales
and primary comparisons; :mod:`kdlab.experiments.specs`).

Each command runs its grid (every run an ordinary run directory under ``out_dir``; finished runs
with the same resolved config are reused), then writes ``out_dir/<experiment>/report.md`` with
mean +- sample std over seeds beside the paper's numbers, a ``results.json`` and plots.

Scales (choices, since the paper ran CIFAR-100 / MIT Scenes on a GPU):

* ``full``: the paper's models (VGG-9 teacher, VGG-4 student; ResNet -> VGG-9 for transfer), sizes
  and optimiser (Adam 1e-3, x0.1 at 80% of training, batch 128; SGD 1e-3 momentum 0.9, batch 8,
  75 epochs, x0.1 at 40 and 60 for transfer), 3 seeds.
* ``small``: channel width x0.25, a 500-image validation and 2,000-image stratified test split, 3 seeds,
  cosine schedule. Table 2: 20 epochs (1,560 steps of batch 64) per row, the squared-error and the
  cross-entropy (eq. 3) penalty; Table 4 at 64 px (see :mod:`kdlab.experiments.jacobian_transfer`).
  Cost: Table 2 27 runs (~1.5 h on 2 cores; 1-1.5 min per run on the GPU), Table 4 about an hour,
  Tables 3 and 5 well under an hour each. Runs are ordinary run directories: an interrupted grid is
  completed, not repeated.

Output-Jacobian rows use the teacher's top class (section 4.1, no labels needed, so the rows
without CE use no labels at all); transfer rows' "Jacobians" are attention-map Jacobians (section
5.1.1: output Jacobians could not be reduced there) at the shallowest matching depth, pooled with
window s/5 (section 10.2). The Fashion-MNIST transfer task: a ResNet-20 teacher trained on classes
0-4 (the source task), a VGG-9 student on classes 5-9 (the target task); the "oracle" row starts
from a VGG-9 trained on the source task.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kdlab.experiments import EXPERIMENTS, grid
from kdlab.experiments.jacobian_report import clean_cost_lines, table2_orderings

# ----------------------------------------------------------------------------- the paper's numbers
PAPER_T2_SIGMAS = [0.0, 0.1, 0.2, 0.3, 0.4]
PAPER_T2 = {  # Table 2, CIFAR-100 VGG-9, accuracy % under Gaussian noise (normalised units)
    "lam0": ("lambda = 0", [64.78, 61.9, 47.53, 29.63, 17.69]),
    "lam0.1": ("lambda = 0.1", [65.62, 63.36, 53.57, 37.38, 23.99]),
    "lam1": ("lambda = 1.0", [63.59, 62.66, 57.53, 47.48, 35.43]),
    "lam10": ("lambda = 10.0", [61.37, 60.78, 58.28, 52.82, 44.96]),
    "ce_lam0.1": ("lambda = 0.1, cross-entropy form (eq. 3)", None),
    "ce_lam1": ("lambda = 1.0, cross-entropy form (eq. 3)", None),
    "ce_lam10": ("lambda = 10.0, cross-entropy form (eq. 3)", None),
    "l2": ("l2 regularization (gamma = 1e-3)", [66.92, 60.41, 39.93, 23.32, 13.76]),
    "dropout": ("Dropout (p = 0.25)", [66.8, 61.53, 44.34, 26.70, 15.77]),
}
T2_OVERRIDES = {
    "lam0": [],
    "lam0.1": ["objective.teacher.jacobian_penalty.weight=0.1"],
    "lam1": ["objective.teacher.jacobian_penalty.weight=1.0"],
    "lam10": ["objective.teacher.jacobian_penalty.weight=10.0"],
    "ce_lam0.1": ["objective.teacher.jacobian_penalty.weight=0.1", "objective.teacher.jacobian_penalty.form=ce"],
    "ce_lam1": ["objective.teacher.jacobian_penalty.weight=1.0", "objective.teacher.jacobian_penalty.form=ce"],
    "ce_lam10": ["objective.teacher.jacobian_penalty.weight=10.0", "objective.teacher.jacobian_penalty.form=ce"],
    "l2": ["optim.weight_decay=0.001"],
    "dropout": ["model.kwargs.dropout=0.25"],
}
# ----------------------------------------------------------------------------- scales
SMALL_COMMON = [
    "data.val_size=500",
    "data.max_test=2000",
    "data.batch_size=64",
    "eval.latency=false",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "optim.scheduler=cosine",
    "optim.milestones=[]",
]
SMALL_WIDTH = ["model.kwargs.width=0.25"]
SCALE = {
    "small": {
        "seeds": [0, 1, 2],
        "teacher": SMALL_WIDTH + ["data.n_per_class=1000", "trainer.epochs=4"],
        "t2": SMALL_WIDTH + ["data.n_per_class=500", "trainer.epochs=20"],  # 1,560 steps of batch 64
        "t3_sizes": [5, 10, 50],
        "t3_epochs": 20,
        "source": ["data.n_per_class=1000", "trainer.epochs=3"],
        "t45_size": 10,
        "t4_epochs": 60,  # 420 steps of batch 8
    },
    "full": {
        "seeds": [0, 1, 2],
        "teacher": ["trainer.epochs=100", "optim.milestones=[80]"],
        "t2": ["trainer.epochs=100", "optim.milestones=[80]"],
        "t3_sizes": [5, 10, 25, 50, None],
        "t3_epochs": 75,
        "source": ["trainer.epochs=30"],
        "t45_size": 10,
        "t4_epochs": 75,
    },
}


def _common(scale: str) -> List[str]:
    return list(SMALL_COMMON) if scale == "small" else ["eval.latency=false", "trainer.progress=false"]


def _run(name: str, overrides: Sequence[str]) -> Path:
    """The cell of the packaged recipe ``name`` with ``overrides`` (:func:`kdlab.experiments.grid.run_cell`)."""
    return grid.run_cell([grid.recipe(name)], overrides)


def _size_name(n: Optional[int]) -> str:
    return "full" if n is None else str(n)


def _paper_cell(paper: Sequence[float], sizes: Sequence[Optional[int]], n: Optional[int]) -> str:
    return f"{paper[sizes.index(n)]:.2f}" if n in sizes else "-"


def _teacher(out_dir: Path, scale: str, extra: Sequence[str]) -> Path:
    sc = SCALE[scale]
    return _run("jacobian_teacher", [f"out_dir={out_dir}", *_common(scale), *sc["teacher"], *extra])


def _plot_lines(path: Path, xs: Sequence[Any], series: Dict[str, List[Optional[float]]], xlabel: str, title: str) -> None:
    from matplotlib.figure import Figure

    from kdlab.report.plots import save_figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    pos = list(range(len(xs)))
    for name, ys in series.items():
        pts = [(p, y) for p, y in zip(pos, ys) if y is not None]
        if pts:
            ax.plot([p for p, _ in pts], [y for _, y in pts], marker="o", label=name)
    ax.set_xticks(pos)
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


# ----------------------------------------------------------------------------- Table 2
@EXPERIMENTS.register("jacobian-table2", help="Jacobian paper Table 2: Jacobian-norm penalty vs L2 / dropout under input noise")
def table2(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
    """VGG-9 trained with penalty lambda in {0, 0.1, 1, 10} (squared-error form of Prop. 2, and the
    cross-entropy form of eq. 3), L2 1e-3, dropout 0.25; accuracy under noise and the clean-accuracy cost."""
    sc = SCALE[scale]
    seeds = list(seeds) if seeds else sc["seeds"]
    sig = PAPER_T2_SIGMAS
    acc: Dict[str, Dict[str, List[float]]] = {r: {str(s): [] for s in sig} for r in PAPER_T2}
    for row, ov_row in T2_OVERRIDES.items():
        for seed in seeds:
            ov = [f"out_dir={out_dir}", *_common(scale), *sc["t2"], f"eval.noise_sigmas=[{','.join(map(str, sig))}]",
                  f"seed={seed}", f"data.subset_seed={seed}", f"name=jacobian-t2-{row}-s{seed}", *ov_row]
            s = grid.read_summary(_run("jacobian_teacher", ov + list(overrides)))
            for x in sig:
                acc[row][str(x)].append(s["noise_acc"][str(float(x))])
    from kdlab.report import markdown_table

    headers = ["Noise std. dev. ->"] + [str(s) for s in sig]
    rows = [[label] + [f"{grid.mean_std_text(acc[r][str(s)])} ({'-' if paper is None else f'{paper[i]:.2f}'})"
                       for i, s in enumerate(sig)] for r, (label, paper) in PAPER_T2.items()]
    out = Path(out_dir) / "jacobian-table2"
    _plot_lines(out / "plots" / "table2.png", sig, {PAPER_T2[r][0]: [grid.mean(acc[r][str(s)]) for s in sig] for r in PAPER_T2},
                "noise std (normalised units)", "Table 2: accuracy under Gaussian input noise")
    lines = [
        f"Scale `{scale}`, seeds {seeds}. Cells: test accuracy % under x + sigma N(0, I) (normalised inputs), "
        "mean ± std over seeds (paper's CIFAR-100 value in brackets). Penalty: squared-error form on the "
        "label's logit (Prop. 2 with section 4.1's label selection); cross-entropy form: ||grad_x log softmax_y||^2 "
        "(eq. 3, the form the paper derives for cross-entropy training).",
        "",
        markdown_table(headers, rows),
        "![table 2](plots/table2.png)", "",
        *table2_orderings(acc, sig, {r: v[0] for r, v in PAPER_T2.items()}), "",
        *clean_cost_lines(acc, {r: v[0] for r, v in PAPER_T2.items()}),
    ]
    return grid.write_report(out, "Jacobian matching, Table 2: noise robustness", lines,
                             {"scale": scale, "seeds": seeds, "acc": acc, "paper": PAPER_T2})


