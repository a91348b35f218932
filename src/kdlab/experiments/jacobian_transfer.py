"""The Jacobian paper's transfer-learning tables (Srinivas & Fleuret, ICML 2018, Tables 3-5, section 5.1.1):
``kdlab reproduce jacobian-table3``.

The Fashion-MNIST transfer task: a teacher trained on classes 0-4 (the source task), a VGG-9 student on
classes 5-9 (the target task) that matches the teacher's outputs on its own images (LwF), its attention
maps and their input Jacobians ("attention Jacobians": output Jacobians could not be reduced there), pooled
with window s/5 (section 10.2). The "oracle" row starts from a VGG-9 trained on the source task.
Tables 1, 2, 4 and 5 are declarative experiment specs (``recipes/experiments/jacobian-table<N>.yaml``;
:mod:`kdlab.experiments.specs`).

Scales (choices, since the paper ran ImageNet -> MIT Scenes on a GPU): ``full``: the paper's models
(ResNet -> VGG-9) and optimiser (SGD 1e-3 momentum 0.9, batch 8, 75 epochs, x0.1 at 40 and 60), 3 seeds;
``small``: VGG-9 channel width x0.25, a 500-image validation and 2,000-image stratified test split, 3 seeds,
cosine schedule. Cost on 2 cores: well under an hour. Runs are ordinary run directories: an interrupted grid is completed, not repeated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kdlab.experiments import EXPERIMENTS, grid
from kdlab.experiments.jacobian_report import table3_orderings

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
        "t3_sizes": [5, 10, 50],
        "t3_epochs": 20,
        "source": ["data.n_per_class=1000", "trainer.epochs=3"],
    },
    "full": {
        "seeds": [0, 1, 2],
        "t3_sizes": [5, 10, 25, 50, None],
        "t3_epochs": 75,
        "source": ["trainer.epochs=30"],
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


PAPER_T3_SIZES = [5, 10, 25, 50, None]
PAPER_T3 = {  # Table 3, ImageNet ResNet-34 -> MIT Scenes VGG-9
    "ce": ("Cross-Entropy (CE) training on untrained student network", [11.64, 20.30, 35.19, 46.38, 59.33]),
    "oracle": ("CE on pre-trained student network (Oracle)", [25.93, 43.81, 57.65, 64.18, 71.42]),
    "lwf": ("CE + match activations (Li & Hoiem, 2016)", [17.08, 27.13, 45.08, 55.22, 65.22]),
    "lwf_jac": ("CE + match {activations + Jacobians}", [17.88, 28.25, 45.26, 56.49, 66.04]),
    "lwf_at": ("CE + match {activations + attention} (Zagoruyko & Komodakis, 2017)", [16.53, 28.35, 46.01, 57.80, 67.24]),
    "lwf_at_jac": ("CE + match {activations + attention + Jacobians}", [18.02, 29.25, 47.31, 58.35, 67.31]),
}

# ----------------------------------------------------------------------------- transfer (Tables 3-5)
SOURCE_CLASSES = "[0,1,2,3,4]"
TARGET_CLASSES = "[5,6,7,8,9]"
# Teacher ResNet-20 vs student VGG-9 features of equal spatial size on 28x28: (layer2, pool1) 14x14,
# (layer3, pool2) 7x7; the first is the shallowest ("feature level 1" of section 10.2).
AT_LAYERS = "[[pool1,layer2],[pool2,layer3]]"
# The terms of the lwf method (objective.student.<term>.weight; 0 = off: the lwf method's default terms are
# ce and logits, so a row without a term must switch it off) and the oracle's initialisation.
_CE, _ACT, _JAC = "objective.student.ce.weight", "objective.student.logits.weight", "objective.student.jacobian.weight"
_AT, _AT_JAC = "objective.student.attention.weight", "objective.student.attention_jacobian.weight"
_OFF = {_CE: 10.0, _ACT: 0.0, _JAC: 0.0, _AT: 0.0, _AT_JAC: 0.0, "players.init_from_teacher": False}
T3_ROWS = {  # every weight explicit (the recipe's defaults are the last row's)
    "ce": dict(_OFF),
    "oracle": {**_OFF, "players.init_from_teacher": True},
    "lwf": {**_OFF, _ACT: 10.0},
    "lwf_jac": {**_OFF, _ACT: 10.0, _AT_JAC: 10.0},
    "lwf_at": {**_OFF, _ACT: 10.0, _AT: 10.0},
    "lwf_at_jac": {**_OFF, _ACT: 10.0, _AT: 10.0, _AT_JAC: 10.0},
}


def _sources(out_dir: Path, scale: str, extra: Sequence[str]) -> Tuple[Path, Path]:
    """(ResNet-20 teacher, VGG-9 for the oracle), both trained on the source classes."""
    sc = SCALE[scale]
    base = [f"out_dir={out_dir}", *_common(scale), *sc["source"], f"data.classes={SOURCE_CLASSES}"]
    teacher = _run("jacobian_lwf_teacher", base + ["model.name=resnet20", "name=jacobian-src-resnet20", *extra])
    oracle = _run("jacobian_lwf_teacher", base + (SMALL_WIDTH if scale == "small" else [])
                  + ["model.name=vgg9", "name=jacobian-src-vgg9", *extra])
    return teacher, oracle


def _transfer_run(out_dir: Path, scale: str, teacher: Path, n: Optional[int], seed: int, name: str,
                  loss: Dict[str, Any], extra: Sequence[str]) -> Path:
    sc = SCALE[scale]
    ov = [f"out_dir={out_dir}", *_common(scale), *(SMALL_WIDTH if scale == "small" else []),
          f"teacher.checkpoint={teacher}", f"data.classes={TARGET_CLASSES}", "data.batch_size=8",
          f"data.n_per_class={'null' if n is None else n}", f"trainer.epochs={sc['t3_epochs']}",
          f"seed={seed}", f"data.subset_seed={seed}", f"name={name}",
          f"objective.student.attention.layers={AT_LAYERS}", "objective.student.attention_jacobian.layers=[[pool1,layer2]]"]
    if scale == "full":
        ov += ["optim.scheduler=multistep", "optim.milestones=[40,60]"]
    ov += [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in loss.items()]
    return _run("jacobian_lwf", ov + list(extra))


@EXPERIMENTS.register("jacobian-table3", help="Jacobian paper Table 3: LwF transfer + attention + Jacobians (FMNIST 0-4 -> 5-9)")
def table3(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
    """Transfer from a ResNet-20 trained on classes 0-4 to a VGG-9 on classes 5-9, six rows."""
    sc = SCALE[scale]
    seeds = list(seeds) if seeds else sc["seeds"]
    teacher, oracle_src = _sources(out_dir, scale, overrides)
    acc: Dict[str, Dict[str, List[float]]] = {r: {} for r in T3_ROWS}
    for n in sc["t3_sizes"]:
        for row, loss in T3_ROWS.items():
            for seed in seeds:
                t = oracle_src if row == "oracle" else teacher
                run = _transfer_run(out_dir, scale, t, n, seed, f"jacobian-t3-{row}-n{_size_name(n)}-s{seed}", loss, overrides)
                acc[row].setdefault(_size_name(n), []).append(grid.read_summary(run)["test_acc_best"])
    from kdlab.report import markdown_table

    sizes = sc["t3_sizes"]
    headers = ["# data points per class ->"] + [_size_name(n) for n in sizes]
    rows = [[label] + [f"{grid.mean_std_text(acc[r][_size_name(n)])} ({_paper_cell(paper, PAPER_T3_SIZES, n)})" for n in sizes]
            for r, (label, paper) in PAPER_T3.items()]
    out = Path(out_dir) / "jacobian-table3"
    _plot_lines(out / "plots" / "table3.png", [_size_name(n) for n in sizes],
                {PAPER_T3[r][0]: [grid.mean(acc[r][_size_name(n)]) for n in sizes] for r in T3_ROWS},
                "target images per class", "Table 3: transfer, FMNIST classes 0-4 -> 5-9")
    lines = [
        f"Scale `{scale}`, seeds {seeds}. Source: ResNet-20 on Fashion-MNIST classes 0-4 "
        f"(test acc {grid.read_summary(teacher)['test_acc_best']:.2f}%); target: VGG-9 on classes 5-9. Cells: target test "
        "accuracy %, mean ± std (paper's ImageNet -> MIT Scenes value in brackets). Weights 10 (section 10.2); "
        "Jacobians = attention-map Jacobians at (VGG pool1, ResNet layer2), window s/5.",
        "",
        markdown_table(headers, rows),
        "![table 3](plots/table3.png)", "",
        *table3_orderings(acc, [_size_name(n) for n in sizes], {r: v[0] for r, v in PAPER_T3.items()}),
    ]
    return grid.write_report(out, "Jacobian matching, Table 3: transfer learning", lines,
                             {"scale": scale, "seeds": seeds, "acc": acc, "paper": PAPER_T3})
