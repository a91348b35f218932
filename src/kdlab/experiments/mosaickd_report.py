"""The report of ``kdlab reproduce mosaickd`` (:mod:`kdlab.experiments.mosaickd`): tables with mean ± std
over seeds, paired tests of MosaicKD against KD on the same OOD images, the stride ablation beside
the supplement's Table 4, Fig. 1's sample grids side by side and student accuracy vs updates."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List

from kdlab.experiments import grid

ROWS = ("indomain", "kd", "fitnet", "balanced", "mosaickd", "mosaickd-entropy", "frozen-g", "dfad", "dafl")


def _val_curve(run: Path):
    from kdlab.report import epoch_series, read_metrics

    return epoch_series(read_metrics(run), "val/acc")


def _plot_curves(path: Path, curves: Dict[str, Any], title: str) -> None:
    from matplotlib.figure import Figure

    from kdlab.report.plots import save_figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for label, (xs, ys) in curves.items():
        if xs:
            ax.plot(xs, ys, marker=".", label=label)
    ax.set_xlabel("epoch of the row's own loader (every row's last epoch ends at the same student updates)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _last_grid(run: Path) -> Path:
    grids = sorted((run / "samples").glob("epoch_*.png"))
    return grids[-1] if grids else None


def write(out: Path, scale: str, seeds: List[int], teacher: Path, cells: Dict[str, Dict[str, List[Path]]],
          strides: Dict[int, Path], regs: Dict[str, Path], sources: List[str]) -> Path:
    from kdlab.experiments.mosaickd import LABELS, PAPER_T4, PAPER_T5
    from kdlab.report import markdown_table, ordering_text, paired_test

    t = grid.read_summary(teacher)
    acc = {row: {src: [grid.read_summary(r)["test_acc_best"] for r in runs] for src, runs in by.items()}
           for row, by in cells.items()}
    last = {row: {src: [grid.read_summary(r)["test_acc_last"] for r in runs] for src, runs in by.items()}
            for row, by in cells.items()}
    lines = [
        f"Scale `{scale}`, seeds {seeds}. Teacher {t['model']['name']} ({t['model']['params']:,} params) on "
        f"`{t['data']['name']}`: test accuracy {t['test_acc_best']:.2f}%. Every student row: the same student, "
        "number of updates, schedule and seeds; cells are test accuracy % on the teacher's test set, mean ± std "
        "over seeds, of the checkpoint selected on the teacher's validation split (best) / of the last epoch. "
        "Paper: supplement Table 5 (ImageNet-32, resnet-56 -> resnet-20, Places365 OOD), context only.",
        "",
    ]
    head = ["row", *[f"{s}: best" for s in sources], *[f"{s}: last" for s in sources], "paper (T5)"]
    body = []
    for row in ROWS:
        if row not in acc:
            continue
        by, by_last = acc[row], last[row]
        cols = [grid.mean_std_text(by.get(s, by.get("-", []))) for s in sources]
        cols += [grid.mean_std_text(by_last.get(s, by_last.get("-", []))) for s in sources]
        body.append([LABELS[row], *cols, f"{PAPER_T5[row]:.2f}" if row in PAPER_T5 else "—"])
    lines += [markdown_table(head, body), ""]
    lines += ["Orderings (best-on-validation accuracy, paired over seeds):", ""]
    for s in sources:
        for other in ("kd", "fitnet", "balanced", "frozen-g", "mosaickd-entropy"):
            if other in acc and s in acc[other] and s in acc.get("mosaickd", {}):
                test = paired_test(acc["mosaickd"][s], acc[other][s])
                lines.append(f"- {s}: {ordering_text('MosaicKD', LABELS[other], test)}")
        for other in ("dfad", "dafl"):
            if other in acc and s in acc.get("mosaickd", {}):
                test = paired_test(acc["mosaickd"][s], acc[other]["-"])
                lines.append(f"- {s}: {ordering_text('MosaicKD', LABELS[other], test)}")
    out.mkdir(parents=True, exist_ok=True)
    curves = {LABELS[row]: _val_curve(by[sources[0]][0] if sources[0] in by else by["-"][0])
              for row, by in cells.items()}
    _plot_curves(out / "plots" / "curves.png", curves, f"validation accuracy vs epoch, seed {seeds[0]}, OOD {sources[0]}")
    lines += ["", "![accuracy vs updates](plots/curves.png)", ""]

    s_rows = [[f"stride {k}", f"{grid.read_summary(strides[k])['test_acc_best']:.2f}", f"{PAPER_T4[k]:.2f}"]
              for k in sorted(strides)]
    lines += [f"## Patch overlap (supplement Table 4): the final stride of the patch discriminator, {sources[0]}, "
              f"seed {seeds[0]}, half the epochs of the main table (compare within this table)", "", markdown_table(["final stride", "MosaicKD best %", "paper (wrn40-2 -> wrn16-1)"], s_rows),
              "", "## Regularisation (supplement Fig. 1): no D / full-image D / patch D", ""]
    reg_rows = []
    for reg in ("none", "image", "patch"):
        run = regs[reg]
        grid_png = _last_grid(run)
        if grid_png is not None:
            (out / "samples").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(grid_png, out / "samples" / f"{reg}.png")
        reg_rows.append([reg, f"{grid.read_summary(run)['test_acc_best']:.2f}",
                         f"![{reg}](samples/{reg}.png)" if grid_png is not None else "—"])
    lines += [markdown_table(["regularizer", "student best %", "generator samples (last epoch)"], reg_rows), ""]
    results = {"scale": scale, "seeds": seeds, "teacher_acc": t["test_acc_best"], "acc": acc, "last": last,
               "strides": {k: grid.read_summary(v)["test_acc_best"] for k, v in strides.items()},
               "regularizers": {k: grid.read_summary(v)["test_acc_best"] for k, v in regs.items()},
               "paper_t4": PAPER_T4, "paper_t5": PAPER_T5}
    return grid.write_report(out, "MosaicKD: distillation from out-of-domain data", lines, results)
