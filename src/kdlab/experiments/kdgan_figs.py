"""KDGAN's figures (Wang et al. 2018, appendix D) on real Fashion-MNIST: ``kdlab reproduce kdgan-fig6 |
kdgan-fig7``.

* ``kdgan-fig6``: the teacher's accuracy against gamma (how much the classifier distills into it).
* ``kdgan-fig7``: variance of the classifier's gradients (adversarial term and distillation term)
  with and without the Gumbel trick, training on 100 images.

Protocol, scales and cells: :mod:`kdlab.experiments.kdgan`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from kdlab.experiments import EXPERIMENTS, grid
from kdlab.experiments.kdgan import METHODS_T4, _base, _merge, _protocol, _scale, _student, _teacher, in_process_game
from kdlab.experiments.kdgan_report import fig6_orderings, fig7_orderings


def _score(score: str) -> Dict[str, Any]:
    """``objective`` keys: both players' REINFORCE score (``kdgan_adversarial.score``)."""
    return {p: {"kdgan_adversarial": {"score": score}} for p in ("student", "teacher")}


@EXPERIMENTS.register("kdgan-fig6", help="KDGAN Fig. 6: teacher accuracy vs gamma")
def fig6(out_dir: Path, scale: str, seeds: Optional[List[int]], overrides: List[str]) -> Path:
    sc = _scale(scale)
    seeds = seeds or sc["fig_seeds"]
    out = Path(out_dir)
    n = sc["ns"][1]
    t = _teacher(sc, n, out, overrides)
    t0 = grid.read_summary(t)["test_acc_best"]
    rows = []
    for g in sc["gammas"]:
        ss = [grid.read_summary(_student(sc, "KDGAN", METHODS_T4["KDGAN"], n, s, t, out, overrides, extra={"objective": {"teacher": {"kdgan_distill": {"weight": g}}}},
                                         tag=f"-g{g:g}")) for s in seeds]
        rows.append((g, [x["teacher"]["test_acc_last"] for x in ss], [x["teacher"]["test_acc_at_best"] for x in ss],
                     [x["test_acc_best"] for x in ss]))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [max(g, 1e-6) for g, *_ in rows]
    ax.semilogx(xs, [grid.mean(r[1]) for r in rows], "o-", label="teacher (last epoch)")
    ax.semilogx(xs, [grid.mean(r[3]) for r in rows], "s--", label="classifier (best val)")
    ax.axhline(t0, color="gray", lw=0.8, label="teacher before the game")
    ax.set_xlabel("gamma (gamma = 0 plotted at 1e-6)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    (out / "kdgan-fig6").mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / "kdgan-fig6" / "fig6.png", dpi=120)
    plt.close(fig)
    lines = _protocol(scale, sc, seeds, overrides)
    lines += [f"n = {n}; the pre-trained teacher's test accuracy before the game: {t0:.2f}. Estimator: paper. "
              f"Teacher Adam {sc['teacher_lr']:g} with the cross-entropy anchor {sc['teacher_ce']:g} (the protocol's).", "",
              "| gamma | teacher test acc, last epoch | teacher at the classifier's best epoch | classifier best-val test acc |",
              "|---|---|---|---|"]
    lines += [f"| {g:g} | {grid.mean_std_text(a)} | {grid.mean_std_text(b)} | {grid.mean_std_text(c)} |" for g, a, b, c in rows]
    best = max(rows, key=lambda r: grid.mean(r[1]))
    lines += ["", "![fig6](fig6.png)", "",
              "Paper (MNIST, Fig. 6): the teacher's accuracy first rises with gamma (the classifier's knowledge helps it) and "
              f"falls for large gamma. Ours: the best teacher (mean) is at gamma = {best[0]:g} ({grid.mean(best[1]):.2f}). "
              f"Does the teacher improve over its pre-trained accuracy ({t0:.2f})?", ""] + fig6_orderings(rows, t0)
    return grid.write_report(out / "kdgan-fig6", "KDGAN Fig. 6 on Fashion-MNIST: teacher accuracy vs gamma", lines)


@EXPERIMENTS.register("kdgan-fig7", help="KDGAN Fig. 7: gradient variance with and without the Gumbel trick")
def fig7(out_dir: Path, scale: str, seeds: Optional[List[int]], overrides: List[str]) -> Path:
    from kdlab.data import make_loader

    sc = _scale(scale)
    seeds = seeds or sc["fig_seeds"]
    out = Path(out_dir)
    t = _teacher(sc, 100, out, overrides)
    variants = {
        "without Gumbel (categorical samples, score log p_c(z))": {"players": {"sampler": "categorical"}},
        "with Gumbel (score log p_c(z) at z = argmax y)": {"players": {"sampler": "gumbel"}, "objective": _score("discrete")},
        "with Gumbel (score log q_c(y), concrete density)": {"players": {"sampler": "gumbel"}, "objective": _score("concrete")},
    }
    curves: Dict[str, Dict[str, List[float]]] = {}
    per_seed: Dict[str, List[float]] = {}  # variant -> per-seed mean adversarial-gradient variance
    for vname, loss in variants.items():
        adv_all, ds_all = [], []
        for seed in seeds:
            cfg = grid.resolve([_merge(_base(sc, 100, out), {
                "name": "kdgan-fig7", "method": "kdgan", "seed": seed, "teacher": {"checkpoint": str(t)},
                "model": {"name": "mlp", "kwargs": {"hidden": [800, 800]}}, "data": {"batch_size": 20},
                "players": {"disc_model": "lenet", "disc_kwargs": sc["teacher_kwargs"]}}, loss)], overrides)
            m, data = in_process_game(cfg)
            full = next(iter(make_loader(data.train, len(data.train), False, seed)))
            adv, ds = [], []
            for epoch in range(sc["fig7_epochs"]):
                adv.append(_grad_var(m, full, "adv", sc["fig7_draws"]))
                ds.append(_grad_var(m, full, "ds", sc["fig7_draws"]))
                for i, b in enumerate(make_loader(data.train, 20, True, seed, epoch)):
                    m.training_step(b, i)
                m.on_epoch_end(epoch)
            adv_all.append(adv)
            ds_all.append(ds)
        per_seed[vname] = [grid.mean(v) for v in adv_all]
        curves[vname] = {"adv": [grid.mean(list(c)) for c in zip(*adv_all)], "ds": [grid.mean(list(c)) for c in zip(*ds_all)]}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for vname, c in curves.items():
        axes[0].semilogy(c["adv"], label=vname)
        axes[1].semilogy(c["ds"], label=vname)
    axes[0].set_title("var of grad_c alpha*L_AD (sample draws)")
    axes[1].set_title("var of grad_c beta*L_DS^c (minibatches of 20)")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=6)
    (out / "kdgan-fig7").mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / "kdgan-fig7" / "fig7.png", dpi=120)
    plt.close(fig)
    lines = [f"Scale {scale}: KDGAN (estimator: paper, exact control variate, k = 5) trained on 100 real Fashion-MNIST images "
             f"(10 per class), batch 20, {sc['fig7_epochs']} epochs, seeds {list(seeds)}. At the start of every epoch: the variance "
             f"(mean over the classifier's parameters of the per-parameter variance) of the classifier's adversarial gradient over "
             f"{sc['fig7_draws']} independent sample draws on all 100 images, and of its distillation gradient over "
             f"{sc['fig7_draws']} random minibatches of 20.", "",
             "| variant | adv. grad variance, first epoch | last epoch | distillation grad variance, first | last |", "|---|---|---|---|---|"]
    for vname, c in curves.items():
        lines.append(f"| {vname} | {c['adv'][0]:.3g} | {c['adv'][-1]:.3g} | {c['ds'][0]:.3g} | {c['ds'][-1]:.3g} |")
    lines += ["", "![fig7](fig7.png)", "",
              "Paper (MNIST, Fig. 7): the Gumbel trick lowers the variance of the adversarial gradient. With the score "
              "log p_c(z), the Gumbel-max label z is an exact sample of p_c, so 'with' and 'without' are the same estimator in law "
              "(any difference is Monte-Carlo noise); only the concrete-density score is a different estimator. "
              "Ours (per seed: mean over epochs; paired over seeds on log10 variance):", ""] + fig7_orderings(per_seed)
    return grid.write_report(out / "kdgan-fig7", "KDGAN Fig. 7 on Fashion-MNIST: gradient variance with and without the "
                             "Gumbel trick", lines)


def _grad_var(m, batch, which: str, draws: int) -> float:
    """Mean per-parameter variance of the classifier's gradient of one term over ``draws`` evaluations."""
    import torch

    from kdlab.data.batch import Batch
    from kdlab.terms import Outputs

    c, t = m.players["classifier"], m.players["teacher"]
    x = batch.x
    xt = batch.teacher_input  # the teacher's (privileged) view, if any
    params = [p for p in c.net.parameters()]  # the classifier network (c is a kdlab.terms.Student)
    terms = c.objective.terms  # the classifier's weighted kdgan_adversarial (alpha A_c) and kdgan_distill (beta L_DS)
    with torch.no_grad():
        t_logits = t(xt)
    grads = []
    gen = torch.Generator().manual_seed(1234)
    for _ in range(draws):
        if which == "adv":
            term = terms["kdgan_adversarial"]
            loss = term.weight * term(c(x), None, batch)
        else:
            idx = torch.randperm(x.shape[0], generator=gen)[:20]
            term = terms["kdgan_distill"]
            loss = term.weight * term(c(x[idx]), Outputs(out=t_logits[idx]), Batch(x=x[idx]))
        g = torch.autograd.grad(loss, params)
        grads.append(torch.cat([v.flatten() for v in g]))
    return float(torch.stack(grads).var(0).mean())
