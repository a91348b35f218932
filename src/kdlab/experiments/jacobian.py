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
* ``small`` (2 CPU cores, well under an hour per table): channel width x0.25, fewer sizes
  and epochs, a 500-image validation and 2,000-image stratified test split, 2 seeds, cosine
  schedule. Table 1 students use batch 16 so that the small subsets get enough steps (at 80 steps
  activation matching had not converged and lost to plain CE; at 1,400 steps it won). Estimated
  from per-step timings measured with 1 thread on a shared (busy) 2-core machine, validation
  included: VGG-4 student step ~0.08 s (CE / KD) and ~0.13 s (+ output Jacobian) at batch 16;
  VGG-9 step ~0.15 s, ~0.35 s with the penalty at batch 64; transfer step (batch 8) ~0.03 s (CE)
  to ~0.10 s (all terms); ResNet-20 source step ~0.47 s at batch 64. Table 1: 12 (row, seed)
  pairs x 1,400 steps ~ 30 min + 1.5 min teacher; table 2: 12 runs x 395 steps ~ 20 min;
  table 3: 2 source models ~2.5 min + 36 runs (860 steps per row and seed over the 3 sizes)
  ~ 15 min; tables 4 and 5: 4 and 10 runs of 140 steps, ~2 and ~4 min (+ the source models unless
  already trained in the same ``--out-dir``). Idle cores are faster.

Output-Jacobian rows use the teacher's top class (section 4.1, no labels needed, so the rows
without CE use no labels at all); transfer rows' "Jacobians" are attention-map Jacobians (section
5.1.1: output Jacobians could not be reduced there) at the shallowest matching depth, pooled with
window s/5 (section 10.2). The Fashion-MNIST transfer task: a ResNet-20 teacher trained on classes
0-4 (the source task), a VGG-9 student on classes 5-9 (the target task); the "oracle" row starts
from a VGG-9 trained on the source task.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kdlab.experiments import EXPERIMENTS, grid
from kdlab.experiments.jacobian_report import table1_orderings, table2_orderings, table3_orderings

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
T1_ROWS = {  # row -> (label, term weights of its recipe jacobian_t1_<row>: loss.terms.<term>.weight)
    "ce": ("Cross-Entropy (CE) training", {"ce": 1.0, "logits": 0.0, "jacobian": 0.0}),
    "ce_act": ("CE + match activations", {"ce": 1.0, "logits": 1.0, "jacobian": 0.0}),
    "ce_jac": ("CE + match Jacobians", {"ce": 1.0, "logits": 0.0, "jacobian": 1.0}),
    "ce_act_jac": ("CE + match {activations + Jacobians}", {"ce": 1.0, "logits": 1.0, "jacobian": 1.0}),
    "act": ("Match activations only", {"ce": 0.0, "logits": 1.0, "jacobian": 0.0}),
    "act_jac": ("Match {activations + Jacobians}", {"ce": 0.0, "logits": 1.0, "jacobian": 1.0}),
}
PAPER_T2_SIGMAS = [0.0, 0.1, 0.2, 0.3, 0.4]
PAPER_T2 = {  # Table 2, CIFAR-100 VGG-9, accuracy % under Gaussian noise (normalised units)
    "lam0": ("lambda = 0", [64.78, 61.9, 47.53, 29.63, 17.69]),
    "lam0.1": ("lambda = 0.1", [65.62, 63.36, 53.57, 37.38, 23.99]),
    "lam1": ("lambda = 1.0", [63.59, 62.66, 57.53, 47.48, 35.43]),
    "lam10": ("lambda = 10.0", [61.37, 60.78, 58.28, 52.82, 44.96]),
    "l2": ("l2 regularization (gamma = 1e-3)", [66.92, 60.41, 39.93, 23.32, 13.76]),
    "dropout": ("Dropout (p = 0.25)", [66.8, 61.53, 44.34, 26.70, 15.77]),
}
T2_OVERRIDES = {
    "lam0": [],
    "lam0.1": ["loss.jacobian_penalty=0.1"],
    "lam1": ["loss.jacobian_penalty=1.0"],
    "lam10": ["loss.jacobian_penalty=10.0"],
    "l2": ["optim.weight_decay=0.001"],
    "dropout": ["model.kwargs.dropout=0.25"],
}
PAPER_T3_SIZES = [5, 10, 25, 50, None]
PAPER_T3 = {  # Table 3, ImageNet ResNet-34 -> MIT Scenes VGG-9
    "ce": ("Cross-Entropy (CE) training on untrained student network", [11.64, 20.30, 35.19, 46.38, 59.33]),
    "oracle": ("CE on pre-trained student network (Oracle)", [25.93, 43.81, 57.65, 64.18, 71.42]),
    "lwf": ("CE + match activations (Li & Hoiem, 2016)", [17.08, 27.13, 45.08, 55.22, 65.22]),
    "lwf_jac": ("CE + match {activations + Jacobians}", [17.88, 28.25, 45.26, 56.49, 66.04]),
    "lwf_at": ("CE + match {activations + attention} (Zagoruyko & Komodakis, 2017)", [16.53, 28.35, 46.01, 57.80, 67.24]),
    "lwf_at_jac": ("CE + match {activations + attention + Jacobians}", [18.02, 29.25, 47.31, 58.35, 67.31]),
}
PAPER_T4 = {"depths": ["(7, 2)", "(15, 4)", "(27, 6)", "(33, 8)"], "acc": [22.39, 21.98, 20.45, 20.03],
            "reduction": [25.88, 15.59, 11.55, 1.25]}
PAPER_T5 = {"windows": ["Full", "s/3", "s/5", "s/7", "None"], "acc": [20.00, 21.20, 21.87, 21.09, 19.74]}
T5_POOLS = [1, 3, 5, 7, 0]  # loss.terms.attention_jacobian.pool values for Full, s/3, s/5, s/7, None

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
        "seeds": [0, 1],
        "t1_sizes": [1, 5, 10, 50],
        "t1_epochs": {1: 100, 5: 60, 10: 60, 50: 20},  # batch 16: 100, 240, 420, 640 steps
        "t1_batch": 16,
        "teacher": SMALL_WIDTH + ["data.n_per_class=1000", "trainer.epochs=4"],
        "t2": SMALL_WIDTH + ["data.n_per_class=500", "trainer.epochs=5"],
        "t3_sizes": [5, 10, 50],
        "t3_epochs": 20,
        "source": ["data.n_per_class=1000", "trainer.epochs=3"],
        "t45_size": 10,
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
@EXPERIMENTS.register("jacobian-table1", help="Jacobian paper Table 1: VGG-9 -> VGG-4 distillation vs data points per class")
def table1(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
    """Six loss rows x data points per class x seeds; test accuracy of the best-on-validation student."""
    sc = SCALE[scale]
    seeds = list(seeds) if seeds else sc["seeds"]
    teacher = _teacher(out_dir, scale, overrides)
    acc: Dict[str, Dict[str, List[float]]] = {r: {} for r in T1_ROWS}
    sizes = list(sc["t1_sizes"])
    if any(o.replace(" ", "") in ("data.name=cifar100", "data.name=cifar-100") for o in overrides) and 500 in sizes:
        sizes.remove(500)  # CIFAR-100 has 500 per class in all: the paper's "500 (full)" is the full column
    for n in sizes:
        epochs = sc["t1_epochs"].get(n, 500)
        for row in T1_ROWS:
            for seed in seeds:
                ov = [f"out_dir={out_dir}", *_common(scale), *(SMALL_WIDTH if scale == "small" else []),
                      f"teacher.checkpoint={teacher}", f"data.n_per_class={'null' if n is None else n}",
                      f"trainer.epochs={epochs}", f"data.batch_size={sc['t1_batch']}", f"seed={seed}", f"data.subset_seed={seed}",
                      f"name=jacobian-t1-{row}-n{_size_name(n)}-s{seed}"]
                if scale == "full":
                    ov.append(f"optim.milestones=[{int(0.8 * epochs)}]")
                run = _run(f"jacobian_t1_{row}", ov + list(overrides))
                acc[row].setdefault(_size_name(n), []).append(grid.read_summary(run)["test_acc_best"])
    t = grid.read_summary(teacher)
    from kdlab.report import markdown_table

    headers = ["# data points per class ->"] + [_size_name(n) for n in sizes]
    rows = []
    for r, (label, _) in T1_ROWS.items():
        rows.append([label] + [f"{grid.mean_std_text(acc[r][_size_name(n)])} ({_paper_cell(PAPER_T1[r], PAPER_T1_SIZES, n)})"
                               for n in sizes])
    out = Path(out_dir) / "jacobian-table1"
    _plot_lines(out / "plots" / "table1.png", [_size_name(n) for n in sizes],
                {T1_ROWS[r][0]: [grid.mean(acc[r][_size_name(n)]) for n in sizes] for r in T1_ROWS},
                "data points per class", "Table 1: student test accuracy vs data per class")
    lines = [
        f"Scale `{scale}`, seeds {seeds}, data `{t['data']['name']}`. Cells: test accuracy % of the student "
        "selected on validation, mean ± std over seeds (paper's CIFAR-100 value in brackets).",
        f"Teacher {t['model']['name']} ({t['model']['params']:,} params): test accuracy {t['test_acc_best']:.2f}% "
        "(paper: VGG-9 64.78% on CIFAR-100).",
        "",
        markdown_table(headers, rows),
        "![table 1](plots/table1.png)", "",
        *table1_orderings(acc, [_size_name(n) for n in sizes], {r: v[0] for r, v in T1_ROWS.items()}),
    ]
    return grid.write_report(out, "Jacobian matching, Table 1: distillation with limited data", lines,
                             {"scale": scale, "seeds": seeds, "teacher_acc": t["test_acc_best"], "acc": acc, "paper": PAPER_T1})


# ----------------------------------------------------------------------------- Table 2
@EXPERIMENTS.register("jacobian-table2", help="Jacobian paper Table 2: Jacobian-norm penalty vs L2 / dropout under input noise")
def table2(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
    """VGG-9 trained with penalty lambda in {0, 0.1, 1, 10}, L2 1e-3, dropout 0.25; accuracy under noise."""
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
    rows = [[label] + [f"{grid.mean_std_text(acc[r][str(s)])} ({paper[i]:.2f})" for i, s in enumerate(sig)]
            for r, (label, paper) in PAPER_T2.items()]
    out = Path(out_dir) / "jacobian-table2"
    _plot_lines(out / "plots" / "table2.png", sig, {PAPER_T2[r][0]: [grid.mean(acc[r][str(s)]) for s in sig] for r in PAPER_T2},
                "noise std (normalised units)", "Table 2: accuracy under Gaussian input noise")
    lines = [
        f"Scale `{scale}`, seeds {seeds}. Cells: test accuracy % under x + sigma N(0, I) (normalised inputs), "
        "mean ± std over seeds (paper's CIFAR-100 value in brackets). Penalty: squared-error form on the "
        "label's logit (Prop. 2 with section 4.1's label selection).",
        "",
        markdown_table(headers, rows),
        "![table 2](plots/table2.png)", "",
        *table2_orderings(acc, sig, {r: v[0] for r, v in PAPER_T2.items()}),
    ]
    return grid.write_report(out, "Jacobian matching, Table 2: noise robustness", lines,
                             {"scale": scale, "seeds": seeds, "acc": acc, "paper": PAPER_T2})


# ----------------------------------------------------------------------------- transfer (Tables 3-5)
SOURCE_CLASSES = "[0,1,2,3,4]"
TARGET_CLASSES = "[5,6,7,8,9]"
# Teacher ResNet-20 vs student VGG-9 features of equal spatial size on 28x28: (layer2, pool1) 14x14,
# (layer3, pool2) 7x7; the first is the shallowest ("feature level 1" of section 10.2).
DEPTHS = [("pool1", "layer2"), ("pool2", "layer3")]
AT_LAYERS = "[[pool1,layer2],[pool2,layer3]]"
# The terms of the lwf method (loss.terms.<term>.weight; 0 = off: the lwf method's default terms are
# ce and logits, so a row without a term must switch it off) and the oracle's initialisation.
_CE, _ACT, _JAC = "loss.terms.ce.weight", "loss.terms.logits.weight", "loss.terms.jacobian.weight"
_AT, _AT_JAC = "loss.terms.attention.weight", "loss.terms.attention_jacobian.weight"
_OFF = {_CE: 10.0, _ACT: 0.0, _JAC: 0.0, _AT: 0.0, _AT_JAC: 0.0, "loss.init_from_teacher": False}
T3_ROWS = {  # every weight explicit (the recipe's defaults are the last row's)
    "ce": dict(_OFF),
    "oracle": {**_OFF, "loss.init_from_teacher": True},
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
          f"loss.terms.attention.layers={AT_LAYERS}", "loss.terms.attention_jacobian.layers=[[pool1,layer2]]"]
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


def _jacobian_reduction(run: Path) -> Optional[float]:
    """100 * (first - last) / first of the per-epoch mean training attention-Jacobian loss (Table 4)."""
    from kdlab.report import epoch_series, read_metrics

    _, v = epoch_series(read_metrics(run), "train/attention_jacobian")
    return 100.0 * (v[0] - v[-1]) / v[0] if len(v) >= 2 and v[0] > 0 else None


@EXPERIMENTS.register("jacobian-table4", help="Jacobian paper Table 4: feature depth of the attention Jacobian")
def table4(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
    """CE + activations + attention + Jacobians at each depth pair of equal spatial size."""
    sc = SCALE[scale]
    seeds = list(seeds) if seeds else sc["seeds"]
    teacher, _ = _sources(out_dir, scale, overrides)
    acc: Dict[str, List[float]] = {}
    red: Dict[str, List[float]] = {}
    for s_feat, t_feat in DEPTHS:
        key = f"({t_feat}, {s_feat})"
        for seed in seeds:
            loss = {**T3_ROWS["lwf_at_jac"], "loss.terms.attention_jacobian.layers": f"[[{s_feat},{t_feat}]]"}
            run = _transfer_run(out_dir, scale, teacher, sc["t45_size"], seed, f"jacobian-t4-{s_feat}-s{seed}", loss, overrides)
            acc.setdefault(key, []).append(grid.read_summary(run)["test_acc_best"])
            r = _jacobian_reduction(run)
            if r is not None:
                red.setdefault(key, []).append(r)
    from kdlab.report import markdown_table

    keys = list(acc)
    rows = [["Accuracy (%)"] + [grid.mean_std_text(acc[k]) for k in keys], ["Jacobian loss reduction (%)"] + [grid.mean_std_text(red.get(k, [])) for k in keys]]
    paper = [["Accuracy (%)"] + PAPER_T4["acc"], ["Jacobian loss reduction (%)"] + PAPER_T4["reduction"]]
    out = Path(out_dir) / "jacobian-table4"
    _plot_lines(out / "plots" / "table4.png", keys, {"ours": [grid.mean(acc[k]) for k in keys]},
                "feature matching depth (teacher, student)", "Table 4: depth of the attention Jacobian")
    lines = [
        f"Scale `{scale}`, seeds {seeds}, {sc['t45_size']} target images per class. Depth pairs (teacher ResNet-20, "
        "student VGG-9) with equal spatial size on 28x28; reduction = 100 (first - last epoch) / first epoch of the "
        "training attention-Jacobian loss.",
        "",
        markdown_table(["Feature matching depth (T, S)"] + keys, rows),
        "Paper (ResNet-34 -> VGG-9, MIT Scenes, 10 per class):",
        "",
        markdown_table(["Feature matching depth (T, S)"] + PAPER_T4["depths"], paper),
        "![table 4](plots/table4.png)",
    ]
    return grid.write_report(out, "Jacobian matching, Table 4: feature depth", lines,
                             {"scale": scale, "seeds": seeds, "acc": acc, "reduction": red, "paper": PAPER_T4})


@EXPERIMENTS.register("jacobian-table5", help="Jacobian paper Table 5: average-pool window of the attention Jacobian")
def table5(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
    """CE + activations + attention + Jacobians with pool windows Full, s/3, s/5, s/7, None."""
    sc = SCALE[scale]
    seeds = list(seeds) if seeds else sc["seeds"]
    teacher, _ = _sources(out_dir, scale, overrides)
    acc: Dict[str, List[float]] = {}
    for label, pool in zip(PAPER_T5["windows"], T5_POOLS):
        for seed in seeds:
            run = _transfer_run(out_dir, scale, teacher, sc["t45_size"], seed, f"jacobian-t5-pool{pool}-s{seed}",
                                {**T3_ROWS["lwf_at_jac"], "loss.terms.attention_jacobian.pool": pool}, overrides)
            acc.setdefault(label, []).append(grid.read_summary(run)["test_acc_best"])
    from kdlab.report import markdown_table

    out = Path(out_dir) / "jacobian-table5"
    _plot_lines(out / "plots" / "table5.png", PAPER_T5["windows"], {"ours": [grid.mean(acc[k]) for k in PAPER_T5["windows"]]},
                "average-pool window", "Table 5: pooling window of the attention Jacobian")
    lines = [
        f"Scale `{scale}`, seeds {seeds}, {sc['t45_size']} target images per class; 14x14 maps (VGG pool1 / "
        "ResNet layer2): windows 14 (Full), 5, 3, 2, 1 (None) = max(1, round(14 / k)).",
        "",
        markdown_table(["Average Pool Window size"] + PAPER_T5["windows"],
                       [["Accuracy (%)"] + [grid.mean_std_text(acc[k]) for k in PAPER_T5["windows"]],
                        ["Paper (MIT Scenes)"] + PAPER_T5["acc"]]),
        "![table 5](plots/table5.png)",
    ]
    return grid.write_report(out, "Jacobian matching, Table 5: pooling window", lines,
                             {"scale": scale, "seeds": seeds, "acc": acc, "paper": PAPER_T5})
