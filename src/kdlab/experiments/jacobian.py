"""The Jacobian paper's tables (Srinivas & Fleuret, ICML 2018) on Fashion-MNIST (or CIFAR-100 with
``data.name=cifar100`` where that data exists): ``kdlab reproduce jacobian-table{1,2,3,4,5}``.

Each command runs its grid (every run an ordinary run directory under ``out_dir``; finished runs
with the same resolved config are reused), then writes ``out_dir/<experiment>/report.md`` with
mean +- sample std over seeds beside the paper's numbers, a ``results.json`` and plots.

Scales (choices, since the paper ran CIFAR-100 / MIT Scenes on a GPU):

* ``full``: the paper's models (VGG-9 teacher, VGG-4 student; ResNet -> VGG-9 for transfer), sizes
  and optimiser (Adam 1e-3, x0.1 at 80% of training, batch 128; SGD 1e-3 momentum 0.9, batch 8,
  75 epochs, x0.1 at 40 and 60 for transfer), 3 seeds. The paper's 500 epochs are kept for up to
  100 images per class; the larger subsets use 200 (500/class) and 100 (full) epochs, which
  already reach far more steps than the small subsets (a choice; the paper gives one figure).
* ``small``: channel width x0.25, a 500-image validation and 2,000-image stratified test split, 3 seeds,
  cosine schedule. Table 1: sizes 1, 5, 10, 50 and 500 per class at batch 16 with 300, 800, 1,400,
  2,000 and 2,500 student updates (at 80 steps activation matching had not converged and lost to plain
  CE; the report shows each cell's loss curve and how much of its decrease came in the last quarter),
  the paper's six rows plus the three Jacobian rows in the normalised form; Table 2: 20 epochs (1,560
  steps of batch 64) per row, the squared-error and the cross-entropy (eq. 3) penalty; Table 4 at 64 px
  (see :mod:`kdlab.experiments.jacobian_transfer`). Cost: Table 1 is 135 runs (~5 h on 2 CPU cores at
  ~0.1 s per student step; on one H200 with 15 cells in parallel processes, sizes 1-50 took 6 min),
  Table 2 27 runs (~1.5 h on 2 cores; 1-1.5 min per run on the GPU), Table 4 about an hour, Tables 3 and 5
  well under an hour each. Runs are ordinary run directories: an interrupted grid is completed, not repeated.

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
from kdlab.experiments.jacobian_report import clean_cost_lines, table1_orderings, table2_orderings

# ----------------------------------------------------------------------------- the paper's numbers
PAPER_T1_SIZES = [1, 5, 10, 50, 100, 500, None]
PAPER_T1 = {  # Table 1, CIFAR-100, VGG-9 (64.78%) -> VGG-4, test accuracy %
    "ce": [5.69, 13.9, 20.03, 37.6, 44.92, 54.28, 54.28],
    "ce_act": [12.13, 26.97, 33.92, 46.47, 50.92, 56.65, 56.65],
    "ce_jac": [6.78, 23.94, 32.03, 45.71, 51.47, 53.44, 53.44],
    "ce_act_jac": [13.78, 33.39, 39.55, 49.49, 52.43, 54.57, 54.57],
    "act": [10.73, 28.56, 33.6, 45.73, 50.15, 56.59, 56.59],
    "act_jac": [13.09, 33.31, 38.16, 47.79, 50.06, 51.33, 51.33],
}
#: weight of the normalised form: the common implementation's 20 on the per-element MSE of the unit
#: Jacobians (NOTES.md), i.e. 20 / D on this sum over the D input dimensions (D = 784 on Fashion-MNIST)
NORM_WEIGHT_PER_ELEMENT = 20.0
T1_ROWS = {  # row -> (label, recipe jacobian_t1_<recipe row>, normalised Jacobian form)
    "ce": ("Cross-Entropy (CE) training", "ce", False),
    "ce_act": ("CE + match activations", "ce_act", False),
    "ce_jac": ("CE + match Jacobians", "ce_jac", False),
    "ce_act_jac": ("CE + match {activations + Jacobians}", "ce_act_jac", False),
    "act": ("Match activations only", "act", False),
    "act_jac": ("Match {activations + Jacobians}", "act_jac", False),
    "ce_jac_norm": ("CE + match normalised Jacobians", "ce_jac", True),
    "ce_act_jac_norm": ("CE + match {activations + normalised Jacobians}", "ce_act_jac", True),
    "act_jac_norm": ("Match {activations + normalised Jacobians}", "act_jac", True),
}
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
        "t1_sizes": [1, 5, 10, 50, 500],
        # batch 16: 300, 800, 1,400, 2,000, 2,500 steps (the loss curves of the report show them flat)
        "t1_epochs": {1: 300, 5: 200, 10: 200, 50: 64, 500: 8},
        "t1_batch": 16,
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
        "t1_sizes": [1, 5, 10, 50, 100, 500, None],
        "t1_epochs": {None: 100, 500: 200},  # else 500 (the paper's)
        "t1_batch": 128,
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


# ----------------------------------------------------------------------------- Table 1
def _t1_overrides(row: str, input_dim: int) -> List[str]:
    """The overrides that turn recipe ``jacobian_t1_<recipe row>`` into ``row`` (the normalised form)."""
    if not T1_ROWS[row][2]:
        return []
    return ["objective.student.jacobian.normalize=true", f"objective.student.jacobian.weight={NORM_WEIGHT_PER_ELEMENT / input_dim:.6g}"]


def _loss_change(run: Path, key: str = "train/loss") -> Optional[float]:
    """The share (%) of the run's whole training-loss decrease that happened in its last quarter of
    epochs: ``100 (q3 - q4) / (q1 - q4)`` of the quarter means of the per-epoch loss. Near 0 = the curve
    had flattened; None with fewer than 8 epochs or no decrease."""
    from kdlab.report import epoch_series, read_metrics

    _, v = epoch_series(read_metrics(run), key)
    q = len(v) // 4
    if q < 2:
        return None
    q1, q3, q4 = (sum(v[i * q:(i + 1) * q]) / q for i in (0, 2, 3))
    return 100.0 * (q3 - q4) / (q1 - q4) if q1 > q4 else None


def _plot_curves(path: Path, runs: Dict[str, Dict[str, Path]], labels: Dict[str, str]) -> None:
    """One panel per data size: each row's per-epoch training loss (log scale)."""
    from matplotlib.figure import Figure

    from kdlab.report import epoch_series, read_metrics
    from kdlab.report.plots import save_figure

    sizes = list(next(iter(runs.values())))
    fig = Figure(figsize=(4 * len(sizes), 3.6))
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, n in zip(axes, sizes):
        for row, by_size in runs.items():
            e, v = epoch_series(read_metrics(by_size[n]), "train/loss")
            if v:
                ax.plot(e, v, label=labels[row], lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{n} per class", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training loss (seed 0)")
    if axes[-1].lines:
        axes[-1].legend(fontsize=6)
    save_figure(fig, path)


@EXPERIMENTS.register("jacobian-table1", help="Jacobian paper Table 1: VGG-9 -> VGG-4 distillation vs data points per class")
def table1(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
    """Nine loss rows (the paper's six; the three Jacobian rows again in the normalised form) x data
    points per class x seeds; test accuracy of the best-on-validation student, training-loss curves."""
    sc = SCALE[scale]
    seeds = list(seeds) if seeds else sc["seeds"]
    teacher = _teacher(out_dir, scale, overrides)
    t_cfg = grid.resolve([teacher / "config.yaml"])
    from kdlab.data import dataset_spec

    spec = dataset_spec(t_cfg.data.name, image_size=t_cfg.data.image_size)
    input_dim = spec.in_channels * spec.image_size ** 2
    acc: Dict[str, Dict[str, List[float]]] = {r: {} for r in T1_ROWS}
    first: Dict[str, Dict[str, Path]] = {r: {} for r in T1_ROWS}  # seed-0 runs: the loss curves
    steps: Dict[str, Any] = {}  # student updates per column
    sizes = list(sc["t1_sizes"])
    if any(o.replace(" ", "") in ("data.name=cifar100", "data.name=cifar-100") for o in overrides) and 500 in sizes:
        sizes.remove(500)  # CIFAR-100 has 500 per class in all: the paper's "500 (full)" is the full column
    for n in sizes:
        epochs = sc["t1_epochs"].get(n, 500)
        if n is not None:  # about 60 logged training losses per run (the curves)
            steps[_size_name(n)] = epochs * -(-n * spec.num_classes // sc["t1_batch"])
        log = [f"trainer.log_every_n_steps={max(1, steps[_size_name(n)] // 60)}"] if n is not None else []
        for row, (_, recipe_row, _) in T1_ROWS.items():
            for seed in seeds:
                ov = [f"out_dir={out_dir}", *_common(scale), *(SMALL_WIDTH if scale == "small" else []),
                      f"teacher.checkpoint={teacher}", f"data.n_per_class={'null' if n is None else n}",
                      f"trainer.epochs={epochs}", f"data.batch_size={sc['t1_batch']}", f"seed={seed}", f"data.subset_seed={seed}",
                      f"name=jacobian-t1-{row}-n{_size_name(n)}-s{seed}", *_t1_overrides(row, input_dim), *log]
                if scale == "full":
                    ov.append(f"optim.milestones=[{int(0.8 * epochs)}]")
                run = _run(f"jacobian_t1_{recipe_row}", ov + list(overrides))
                acc[row].setdefault(_size_name(n), []).append(grid.read_summary(run)["test_acc_best"])
                first[row].setdefault(_size_name(n), run)
    t = grid.read_summary(teacher)
    from kdlab.report import markdown_table

    cols = [_size_name(n) for n in sizes]
    labels = {r: v[0] for r, v in T1_ROWS.items()}
    headers = ["# data points per class ->"] + cols
    rows = [[labels[r]] + [f"{grid.mean_std_text(acc[r][c])} ({_paper_cell(PAPER_T1[r], PAPER_T1_SIZES, n) if r in PAPER_T1 else '-'})"
                           for n, c in zip(sizes, cols)] for r in T1_ROWS]
    flat = [[labels[r]] + [_fmt_change(_loss_change(first[r][c])) for c in cols] for r in T1_ROWS]
    out = Path(out_dir) / "jacobian-table1"
    _plot_lines(out / "plots" / "table1.png", cols, {labels[r]: [grid.mean(acc[r][c]) for c in cols] for r in T1_ROWS},
                "data points per class", "Table 1: student test accuracy vs data per class")
    _plot_curves(out / "plots" / "loss_curves.png", first, labels)
    lines = [
        f"Scale `{scale}`, seeds {seeds}, data `{t['data']['name']}`. Cells: test accuracy % of the student "
        "selected on validation, mean ± std over seeds (paper's CIFAR-100 value in brackets).",
        f"Teacher {t['model']['name']} ({t['model']['params']:,} params): test accuracy {t['test_acc_best']:.2f}% "
        "(paper: VGG-9 64.78% on CIFAR-100). Jacobians of the teacher's top class (section 4.1); the paper's "
        f"squared-error form on logits (weight 1), and the normalised form (unit Jacobians, weight "
        f"{NORM_WEIGHT_PER_ELEMENT:g} / D = {NORM_WEIGHT_PER_ELEMENT / input_dim:.4g}: the common implementation's "
        "per-element weight, NOTES.md).",
        f"Student updates per column: {', '.join(f'{c}: {steps.get(c)}' for c in cols)} (batch {sc['t1_batch']}).",
        "",
        markdown_table(headers, rows),
        "![table 1](plots/table1.png)", "",
        "Has the training loss flattened? Share of each run's whole training-loss decrease that came in its last "
        "quarter of epochs (seed 0; near 0 = flat):", "",
        markdown_table(["row"] + cols, flat),
        "![loss curves](plots/loss_curves.png)", "",
        *table1_orderings(acc, cols, labels),
    ]
    return grid.write_report(out, "Jacobian matching, Table 1: distillation with limited data", lines,
                             {"scale": scale, "seeds": seeds, "teacher_acc": t["test_acc_best"], "acc": acc, "paper": PAPER_T1})


def _fmt_change(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.1f}%"


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


