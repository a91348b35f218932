"""The report of ``kdlab reproduce vem-ablation`` (:mod:`kdlab.experiments.vem`): per student size, FID /
KID / IS / VoL / fidelity to the teacher with mean ± std over seeds and paired tests against the base,
the lambda_MI sensitivity, energy-gap and |E| curves, sample grids side by side, and the classifier
pair (KD vs KD + VEM on logits)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from kdlab.experiments import grid

#: paper Table 4, CycleGAN Horse -> Zebra with OMGD (FID, lower is better): context only
PAPER_T4 = {"base": 57.14, "vid": 65.73, "crd": 70.59, "vem": 50.83}
#: paper Table 5 (Cityscapes, OMGD + VEM, mIoU, higher is better) by lambda_MI (0 = OMGD alone): context only
PAPER_T5 = {0.0: 47.52, 0.05: 47.56, 0.1: 48.90, 0.2: 49.39}
#: generator metrics: (label, summary key in "generative", digits, scale)
METRICS: Tuple[Tuple[str, str, int, float], ...] = (
    ("FID ↓", "fid", 2, 1.0), ("KID ↓", "kid", 3, 1.0), ("IS ↑", "is", 3, 1.0), ("VoL", "vol", 1, 1.0),
    ("FID to teacher ↓", "fidelity_fid", 2, 1.0), ("MSE to teacher ↓", "mse_to_teacher", 4, 1.0))


def _gen(run: Path, key: str, scale: float = 1.0) -> Optional[float]:
    v = (grid.read_summary(run).get("generative") or {}).get(key)
    return None if v is None else float(v) * scale


def _nan(values: List[Optional[float]]) -> List[float]:
    """None (a metric the run did not compute) as NaN, which the paired tests drop."""
    return [float("nan") if v is None else v for v in values]


def _fmt(values: List[Optional[float]], digits: int) -> str:
    from kdlab.report import format_mean_std

    return format_mean_std([v for v in values if v is not None], digits=digits)


def _series(run: Path, key: str) -> Tuple[List[int], List[float]]:
    """``(steps, values)`` of the logged ``key`` (e.g. ``train/vem/energy_gap``) of one run."""
    from kdlab.report import read_metrics

    rows = [r for r in read_metrics(run) if key in r]
    return [int(r["step"]) for r in rows], [float(r[key]) for r in rows]


def _binned(xs: List[int], ys: List[float], width: int = 100) -> Tuple[List[float], List[float]]:
    """Means over consecutive ``width``-step bins (the logged MSE is one batch's: noisy)."""
    bins: Dict[int, List[float]] = {}
    for x, y in zip(xs, ys):
        bins.setdefault(x // width, []).append(y)
    keys = sorted(bins)
    return [(k + 0.5) * width for k in keys], [sum(bins[k]) / len(bins[k]) for k in keys]


def _plot_mse(path: Path, cells: Dict[int, Dict[str, List[Path]]], labels: Dict[str, str]) -> Path:
    from matplotlib.figure import Figure

    from kdlab.report.plots import save_figure

    fig = Figure(figsize=(5.5 * len(cells), 4.2))
    axes = fig.subplots(1, len(cells), squeeze=False)[0]
    for ax, (d, by) in zip(axes, cells.items()):
        for row, runs in by.items():
            xs, ys = _binned(*_series(runs[0], "train/mse"))
            if xs:
                ax.plot(xs, ys, marker=".", label=labels[row])
        ax.set_xlabel("student step")
        ax.set_ylabel("training MSE to the teacher (mean per 100 steps)")
        ax.set_title(f"d = {d}, seed 0", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def _plot_energies(path: Path, runs: Dict[str, Path]) -> Path:
    from matplotlib.figure import Figure

    from kdlab.report.plots import save_figure

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "energy_gap", "energy gap E(t~, s) - E(t, s)"), (axes[1], "energy_abs", "mean |E|")):
        for label, run in runs.items():
            xs, ys = _series(run, f"train/vem/{key}")
            if xs:
                ax.plot(xs, ys, label=label, linewidth=1)
        ax.set_xlabel("student step")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def _side_by_side(out: Path, teacher: Path, runs: Dict[str, Path], d: int) -> Path:
    from kdlab.engine.generators import load_generator
    from kdlab.report.gan import side_by_side_grid
    from kdlab.runner import datasets_for

    cfg = grid.resolve([teacher / "config.yaml"])
    data = datasets_for(cfg)
    gens = [load_generator(teacher)] + [load_generator(r) for r in runs.values()]
    return side_by_side_grid(data.test.images, gens, out / "samples" / f"side_by_side_d{d}.png", seed=cfg.eval.sample_seed)


def _verdict(fid_vem: List[float], fid_base: List[float]) -> str:
    from kdlab.report import paired_test

    test = paired_test(fid_vem, fid_base)
    if test["diff"] is None:
        return "no paired values"
    if test["p"] is not None and test["p"] < 0.05 and test["diff"] < 0:
        return f"**reproduces**: VEM lowers FID by {-test['diff']:.2f} (paired p = {test['p']:.3g})"
    if test["p"] is not None and test["p"] < 0.05:
        return f"**does not reproduce**: VEM raises FID by {test['diff']:.2f} (paired p = {test['p']:.3g})"
    p = "untested" if test["p"] is None else f"p = {test['p']:.3g}"
    return f"**does not reproduce** (no significant difference: FID {test['diff']:+.2f}, paired {p}, n = {test['n']})"


def write(out: Path, scale: str, seeds: List[int], sc: Dict[str, Any], teacher: Path, metric: Path,
          cells: Dict[int, Dict[str, List[Path]]], lam_cells: Dict[float, Path], lr_cell: Path, clf_teacher: Path,
          clf: Dict[str, List[Path]]) -> Path:
    from kdlab.experiments.vem import CLF_ROWS, ROWS
    from kdlab.report import markdown_table, ordering_text, paired_test
    from kdlab.report.gan import extractor_text

    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(next(iter(cells.values())).values()))[0]
    s0 = grid.read_summary(first)
    t_sum = s0.get("teacher") or {}
    t_gen = t_sum.get("generative") or {}
    lines = [
        f"Scale `{scale}`, seeds {seeds}. Teacher DCGAN d = {sc['teacher_d']} ({t_sum.get('params', 0):,} params; "
        f"FID {t_gen.get('fid', float('nan')):.2f}, IS {t_gen.get('is', float('nan')):.3f}). "
        f"Feature extractor: {extractor_text(s0.get('extractor'))}. Every row: the same teacher, student, "
        "number of student updates, schedule, latents (a fixed z per transfer row) and seeds; the add-ons act on "
        f"the output images with weight lambda = {sc['lam']} (VEM: EBM {sc['vem']}, K = 10, eta 50, sigma 0.005; "
        f"CRD: {sc['crd']}). Cells: mean ± std over seeds. Paper Table 4 (CycleGAN Horse -> Zebra, OMGD; FID) "
        "is context only: another task, data set and extractor.", ""]
    results: Dict[str, Any] = {"scale": scale, "seeds": seeds, "teacher": t_gen, "rows": {}, "lambda": {}, "classifier": {}}
    verdicts = []
    for d, by in cells.items():
        prof = grid.read_summary(by["base"][0])
        lines += [f"## Student d = {d} ({prof['model']['params']:,} params, compression "
                  f"{prof.get('compression_ratio', float('nan')):.0f}:1)", ""]
        body = []
        for row, runs in by.items():
            vals = {key: [_gen(r, key, scale_) for r in runs] for _, key, _, scale_ in METRICS}
            results["rows"].setdefault(str(d), {})[row] = vals
            body.append([ROWS[row], *[_fmt(vals[key], dg) for _, key, dg, _ in METRICS], f"{PAPER_T4[row]:.2f}"])
        lines += [markdown_table(["row", *[m[0] for m in METRICS], "paper T4 FID"], body), ""]
        fid = {row: _nan([_gen(r, "fid") for r in runs]) for row, runs in by.items()}
        lines += ["Orderings on FID (lower is better; paired over seeds):", ""]
        for a, b in (("vid", "base"), ("crd", "base"), ("vem", "base"), ("vem", "vid"), ("vem", "crd")):
            lines.append(f"- {ordering_text(ROWS[a], ROWS[b], paired_test(fid[a], fid[b]), unit='FID')}")
        mse = {row: _nan([_gen(r, "mse_to_teacher", 1e3) for r in runs]) for row, runs in by.items()}
        lines.append(f"- fidelity: {ordering_text(ROWS['vem'], ROWS['base'], paired_test(mse['vem'], mse['base']), unit='x 1e-3 MSE to the teacher')}")
        verdict = _verdict(fid["vem"], fid["base"])
        verdicts.append(f"d = {d}: {verdict}")
        lines += ["", f"VEM's gain over the base at d = {d}: {verdict}.", ""]
        png = _side_by_side(out, teacher, {ROWS[r]: runs[0] for r, runs in by.items()}, d)
        lines += [f"Samples, seed {seeds[0]}, the same z in every column; rows: real test images, the teacher, "
                  f"then {', '.join(ROWS.values())}:", "", f"![d={d}](samples/{png.name})", ""]

    _plot_mse(out / "plots" / "mse.png", cells, ROWS)
    lines += ["## Training curves", "", "The MSE term of every row per 100 student steps (seed 0): whether training has "
              "flattened by the end of the budget.", "", "![training MSE](plots/mse.png)", ""]
    lam_rows = []
    for lam, run in sorted(lam_cells.items()):
        vals = {key: _gen(run, key, s) for _, key, _, s in METRICS}
        results["lambda"][str(lam)] = vals
        lam_rows.append([f"{lam:g}", *[f"{vals[k]:.{dg}f}" if vals[k] is not None else "—" for _, k, dg, _ in METRICS],
                         f"{PAPER_T5[lam]:.2f}" if lam in PAPER_T5 else "—"])
    lr_vals = {key: _gen(lr_cell, key, s) for _, key, _, s in METRICS}
    results["ebm_lr_check"] = {"lr": sc["ebm_lr_check"], **lr_vals}
    lam_rows.append([f"{sc['lam']:g}, EBM lr {sc['ebm_lr_check']:g}",
                     *[f"{lr_vals[k]:.{dg}f}" if lr_vals[k] is not None else "—" for _, k, dg, _ in METRICS], "—"])
    base0 = cells[sc["lambda_d"]]["base"][0]
    lam_rows.insert(0, ["0 (base)", *[_fmt([_gen(base0, k, s)], dg) for _, k, dg, s in METRICS], f"{PAPER_T5[0.0]:.2f}"])
    lines += [f"## lambda_MI sensitivity (Tables 5-6 values), d = {sc['lambda_d']}, seed {seeds[0]}", "",
              markdown_table(["lambda_MI", *[m[0] for m in METRICS], "paper T5 mIoU ↑ (Cityscapes)"], lam_rows), "",
              f"One seed per row: compare with the seed std of the tables above before reading an ordering. The last "
              f"row is lambda = {sc['lam']} with the EBM's Adam at {sc['ebm_lr_check']:g} instead of the paper's 1e-4.", ""]
    energy_runs = {f"d={d} lambda={sc['lam']}": by["vem"][0] for d, by in cells.items()}
    energy_runs.update({f"d={sc['lambda_d']} lambda={lam:g}": r for lam, r in lam_cells.items() if lam != sc["lam"]})
    energy_runs[f"d={sc['lambda_d']} lambda={sc['lam']} EBM lr {sc['ebm_lr_check']:g}"] = lr_cell
    _plot_energies(out / "plots" / "energies.png", energy_runs)
    lines += ["## Energy curves", "", "The EBM's energy gap (samples minus teacher outputs; > 0 when the EBM tells "
              "them apart) and mean |E| per logged student step, seed 0:", "", "![energies](plots/energies.png)", ""]

    t = grid.read_summary(clf_teacher)
    acc = {row: [grid.read_summary(r)["test_acc_best"] for r in runs] for row, runs in clf.items()}
    last = {row: [grid.read_summary(r)["test_acc_last"] for r in runs] for row, runs in clf.items()}
    results["classifier"] = {"teacher": t["test_acc_best"], "best": acc, "last": last}
    c_rows = [[CLF_ROWS[row], grid.mean_std_text(acc[row]), grid.mean_std_text(last[row])] for row in clf]
    lines += ["## The classifier pair: KD vs KD + VEM on logits", "",
              f"Teacher LeNet ({t['test_acc_best']:.2f}% test) -> MLP 784-100-100-10 on 100 images per class, CE + KD "
              f"(T = 4) for 40 epochs (the demo's student), + VEM (MLP EBM, lambda = {sc['lam']}) on the logits. Test "
              "accuracy %, mean ± std over seeds (each seed also draws its own 100 images per class):", "",
              markdown_table(["row", "best on validation", "last epoch"], c_rows), ""]
    for row in clf:
        if row != "kd":
            lines.append(f"- {ordering_text(CLF_ROWS[row], CLF_ROWS['kd'], paired_test(acc[row], acc['kd']))}")
    lines += ["", "## Verdict", "", "Does VEM's gain over the base (paper Tables 1-4) reproduce here?", ""]
    lines += [f"- {v}" for v in verdicts]
    results["verdicts"] = verdicts
    return grid.write_report(out, "VEM ablation: MI add-ons for distilled generators (Kang et al. 2022)", lines, results)
