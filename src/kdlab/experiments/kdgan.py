"""KDGAN's MNIST experiments (Wang et al. 2018, appendix D) on real Fashion-MNIST.

``kdlab reproduce NAME --scale small|full``:

* ``kdgan-table4``: MIMIC, DISTN, CODIS and KDGAN at n = 5K, 10K, 50K training images, mean +- std
  over seeds (10 at full scale, 3 at small scale).
* ``kdgan-table3``: KDGAN classifier size (MLP 784-h-h-10, h = 100, 200, 800, 1200) x n, with the
  (fine-tuned) teacher's accuracy in parentheses.
* ``kdgan-fig6``: the teacher's accuracy against gamma (how much the classifier distills into it).
* ``kdgan-fig7``: variance of the classifier's gradients (adversarial term and distillation term)
  with and without the Gumbel trick, training on 100 images.

Protocol shared by every run: a validation split carved from the training split selects the
checkpoint (never the test set); reports give the test accuracy of the best-on-validation
checkpoint and of the last epoch. The n-image subset is drawn once per n (subset seed 0) and the
teacher is trained on exactly those n images (as in Table 3, whose teacher accuracy varies with n);
seeds vary initialisation, batch order and sampling. Every optimiser is Adam (lr 5e-4, no schedule,
the published code's setting).

Scales: ``full`` = the paper's sizes (n = 5K/10K/50K, the appendix-C LeNet 32-64-1024 teacher and
discriminator, 10 seeds, 50 epochs; a GPU job). ``small`` (2 CPU cores, well under an hour) =
n divided by 10 (500, 1K, 5K), a narrower LeNet teacher/discriminator (8-16 channels, fc 128), 3 seeds
and 15 epochs; the classifier is the paper's MLP 784-800-800-10 at both scales. Time, estimated from
a 5-epoch, 1-seed run of Table 4 on the shared (busy) 2-core machine: one epoch of all 12 Table-4
student runs of one seed = 30 s (KDGAN 0.23 s per step of 100 images, over half of it), 6 s of
set-up and evaluation per run: Table 4 small ~ 15 x 3 x 30 s + 39 x 6 s + teachers ~ 27 min;
Table 3 (12 KDGAN runs, one seed) ~ 17 min; Fig. 6 ~ 4 min; Fig. 7 ~ 2 min.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kdlab.experiments import EXPERIMENTS, grid
from kdlab.experiments.kdgan_report import fig6_orderings, fig7_orderings, table3_orderings, table4_orderings

PAPER_TABLE4 = {  # MNIST, average accuracy over 10 runs (Table 4)
    "CODIS": {5000: 98.53, 10000: 98.89, 50000: 99.31},
    "DISTN": {5000: 98.04, 10000: 98.79, 50000: 99.26},
    "MIMIC": {5000: 97.93, 10000: 98.65, 50000: 99.05},
    "KDGAN": {5000: 99.01, 10000: 99.25, 50000: 99.54},
}
PAPER_TABLE3 = {  # hidden width -> n -> (classifier, teacher) accuracy on MNIST (Table 3)
    100: {5000: (97.96, 99.25), 10000: (98.74, 99.42), 50000: (99.03, 99.65)},
    200: {5000: (98.72, 99.26), 10000: (98.92, 99.46), 50000: (99.27, 99.70)},
    800: {5000: (99.01, 99.28), 10000: (99.25, 99.48), 50000: (99.54, 99.72)},
    1200: {5000: (99.04, 99.27), 10000: (99.40, 99.53), 50000: (99.77, 99.78)},
}
PAPER_NS = (5000, 10000, 50000)

SCALE = {
    "small": {"ns": [500, 1000, 5000], "seeds": [0, 1, 2], "teacher_kwargs": {"channels": [8, 16], "fc": 128},
              "teacher_epochs": 15, "epochs": 15, "val_size": 1000, "batch": 100, "fig_seeds": [0],
              "gammas": [0.0, 1e-4, 1e-2, 1.0], "fig7_epochs": 6, "fig7_draws": 30},
    "full": {"ns": list(PAPER_NS), "seeds": list(range(10)), "teacher_kwargs": {},
             "teacher_epochs": 30, "epochs": 50, "val_size": 5000, "batch": 100, "fig_seeds": [0, 1, 2],
             "gammas": [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0], "fig7_epochs": 30, "fig7_draws": 100},
}

METHODS_T4 = {  # the student objectives are loss.terms (kdlab list terms); kdgan's game keys are its own
    "MIMIC": {"method": "distill", "loss": {"terms": {"ce": {"weight": 0.0}, "logits": {"weight": 0.5, "mode": "paper"}}}},
    "DISTN": {"method": "distill", "loss": {"terms": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 3.0}}}},
    "CODIS": {"method": "codistill", "loss": {"terms": {"ce": {"weight": 1.0}}, "codistill": 1.0, "peer": "teacher"}},
    "KDGAN": {"method": "kdgan", "loss": {}},
}
METHOD_NOTES = {
    "MIMIC": "logit matching only (Ba & Caruana): 0.5 ||z_c - z_t||^2 per image (the code's tf.nn.l2_loss / batch)",
    "DISTN": "Hinton KD: CE + T^2 KL at T = 3 (recipe kdgan_distn; the released code's MSE-on-logits variant is kdgan_distn_code)",
    "CODIS": "codistillation (Anil et al. 2018): classifier and pre-trained teacher trained together, each CE + KL to the other",
    "KDGAN": "kdgan, estimator: paper (REINFORCE, exact control variate), Gumbel sampler, alpha 0.2, beta 2, gamma 1e-4, "
             "L2 on log-probabilities, k = 5, one d/t/c update per batch, teacher lr 1e-5",
}


def _scale(scale: str) -> Dict[str, Any]:
    if scale not in SCALE:
        raise ValueError(f"unknown scale {scale!r}; accepted: {', '.join(SCALE)}")
    return SCALE[scale]


def _base(sc: Dict[str, Any], n: int, out: Path) -> Dict[str, Any]:
    return {
        "out_dir": str(out),
        "data": {"name": "fashion-mnist", "val_size": sc["val_size"], "n_per_class": n // 10, "subset_seed": 0,
                 "batch_size": sc["batch"], "eval_batch_size": 1000},
        "optim": {"name": "adam", "lr": 5e-4, "weight_decay": 0.0, "scheduler": "none"},
        "trainer": {"epochs": sc["epochs"], "progress": False, "tensorboard": False, "log_every_n_steps": 25},
        "eval": {"latency": False, "noise_sigmas": [0.0]},
    }


def _merge(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _run(cfg_dict: Dict[str, Any], overrides: Sequence[str]) -> Path:
    """The cell of ``cfg_dict`` with ``overrides`` (:func:`kdlab.experiments.grid.run_cell`)."""
    return grid.run_cell([cfg_dict], overrides)


def _teacher(sc, n: int, out: Path, overrides) -> Path:
    cfg = _merge(_base(sc, n, out), {"name": f"kdgan-teacher-n{n}", "label": f"LeNet teacher n={n}", "method": "teacher",
                                     "model": {"name": "lenet", "kwargs": sc["teacher_kwargs"]},
                                     "trainer": {"epochs": sc["teacher_epochs"]}})
    return _run(cfg, overrides)


def _student(sc, label: str, spec: Dict[str, Any], n: int, seed: int, teacher: Path, out: Path, overrides,
             hidden: int = 800, extra_loss: Optional[Dict[str, Any]] = None, tag: str = "") -> Path:
    loss = dict(spec["loss"])
    if spec["method"] == "kdgan":
        loss.update({"disc_model": "lenet", "disc_kwargs": sc["teacher_kwargs"]})
    loss.update(extra_loss or {})
    cfg = _merge(_base(sc, n, out), {
        "name": f"kdgan-{label.lower()}{tag}-h{hidden}-n{n}-s{seed}", "label": label, "method": spec["method"], "seed": seed,
        "teacher": {"checkpoint": str(teacher)}, "model": {"name": "mlp", "kwargs": {"hidden": [hidden, hidden]}}, "loss": loss})
    return _run(cfg, overrides)


def _paper_n(sc_ns: Sequence[int], n: int) -> int:
    return PAPER_NS[list(sc_ns).index(n)]


def _protocol(scale: str, sc: Dict[str, Any], seeds: Sequence[int], overrides: Sequence[str] = ()) -> List[str]:
    return ([f"**Overrides applied to every run** (they take precedence over the protocol below): `{' '.join(overrides)}`", ""]
            if overrides else []) + [
        f"Scale **{scale}**: n = {', '.join(str(n) for n in sc['ns'])} training images "
        f"({'the paper' if scale == 'full' else 'the paper divided by 10'}), seeds {list(seeds)}, {sc['epochs']} epochs per run, "
        f"teacher LeNet {sc['teacher_kwargs'] or '32-64-1024 (appendix C)'} trained {sc['teacher_epochs']} epochs on the same n images, "
        "classifier MLP 784-800-800-10 unless stated; Adam 5e-4 for every player. Data: real Fashion-MNIST "
        f"(validation split of {sc['val_size']} images carved from the training split selects the checkpoint; test = the 10,000-image test split). "
        "Paper numbers are MNIST (which is much easier than Fashion-MNIST): compare orderings, not values.",
        "",
        "Cells: test accuracy (%) of the best-on-validation checkpoint, mean ± sample std over seeds; "
        "*last* = the weights after the final epoch.",
        "",
    ]


@EXPERIMENTS.register("kdgan-table4", help="KDGAN Table 4: MIMIC, DISTN, CODIS, KDGAN vs n (Fashion-MNIST)")
def table4(out_dir: Path, scale: str, seeds: Optional[List[int]], overrides: List[str]) -> Path:
    sc = _scale(scale)
    seeds = seeds or sc["seeds"]
    out = Path(out_dir)
    res: Dict[str, Dict[int, Dict[str, List[float]]]] = {m: {} for m in METHODS_T4}
    teachers = {}
    for n in sc["ns"]:
        t = _teacher(sc, n, out, overrides)
        teachers[n] = grid.read_summary(t)["test_acc_best"]
        for label, spec in METHODS_T4.items():
            cell = res[label].setdefault(n, {"best": [], "last": []})
            for s in seeds:
                summ = grid.read_summary(_student(sc, label, spec, n, s, t, out, overrides))
                cell["best"].append(summ["test_acc_best"])
                cell["last"].append(summ["test_acc_last"])
    lines = _protocol(scale, sc, seeds, overrides)
    head = "| method | " + " | ".join(f"n={n} ours (last) | paper MNIST n={_paper_n(sc['ns'], n)}" for n in sc["ns"]) + " |"
    lines += [head, "|" + "---|" * (1 + 2 * len(sc["ns"]))]
    for label in METHODS_T4:
        cells = []
        for n in sc["ns"]:
            c = res[label][n]
            cells.append(f"{grid.mean_std_text(c['best'])} ({grid.mean_std_text(c['last'])})")
            cells.append(f"{PAPER_TABLE4[label][_paper_n(sc['ns'], n)]:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| teacher (LeNet, pre-trained) | " + " | ".join(f"{teachers[n]:.2f} | —" for n in sc["ns"]) + " |")
    lines += ["", "## Orderings", ""] + table4_orderings(res, sc["ns"])
    lines += ["", "## Methods and estimators", ""] + [f"- **{m}**: {METHOD_NOTES[m]}" for m in METHODS_T4]
    title = "KDGAN Table 4 on Fashion-MNIST: MIMIC, DISTN, CODIS, KDGAN vs training size n"
    return grid.write_report(out / "kdgan-table4", title, lines)


@EXPERIMENTS.register("kdgan-table3", help="KDGAN Table 3: classifier size x n, teacher accuracy in parentheses")
def table3(out_dir: Path, scale: str, seeds: Optional[List[int]], overrides: List[str]) -> Path:
    from kdlab.models import build_model

    sc = _scale(scale)
    seeds = seeds or sc["fig_seeds"]
    out = Path(out_dir)
    lines = _protocol(scale, sc, seeds, overrides)
    lines += ["Classifier MLP 784-h-h-10; parameters in Mi = 2^20 (the paper's unit). Ours: KDGAN classifier (fine-tuned teacher "
              "at the classifier's best epoch); paper: MNIST. Estimator: paper (REINFORCE with the exact control variate).", ""]
    lines += ["| #param (Mi) | " + " | ".join(f"n={n} ours | paper n={_paper_n(sc['ns'], n)}" for n in sc["ns"]) + " |",
              "|" + "---|" * (1 + 2 * len(sc["ns"]))]
    by_cell: Dict[int, Dict[int, List[float]]] = {}  # hidden width -> n -> per-seed accuracy
    for h in (100, 200, 800, 1200):
        mi = sum(p.numel() for p in build_model("mlp", hidden=[h, h]).parameters()) / 2**20
        cells = []
        for n in sc["ns"]:
            t = _teacher(sc, n, out, overrides)
            ss = [grid.read_summary(_student(sc, "KDGAN", METHODS_T4["KDGAN"], n, s, t, out, overrides, hidden=h)) for s in seeds]
            acc = [x["test_acc_best"] for x in ss]
            tacc = [x["teacher"]["test_acc_at_best"] for x in ss]
            by_cell.setdefault(h, {})[n] = acc
            pc, pt = PAPER_TABLE3[h][_paper_n(sc["ns"], n)]
            cells += [f"{grid.mean_std_text(acc)} ({grid.mean_std_text(tacc)})", f"{pc:.2f} ({pt:.2f})"]
        lines.append(f"| {mi:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "## Orderings", ""] + table3_orderings(by_cell, sc["ns"])
    return grid.write_report(out / "kdgan-table3", "KDGAN Table 3 on Fashion-MNIST: classifier size x n (teacher accuracy in "
                             "parentheses)", lines)


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
        ss = [grid.read_summary(_student(sc, "KDGAN", METHODS_T4["KDGAN"], n, s, t, out, overrides, extra_loss={"gamma": g},
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
              "Teacher learning rate 1e-5 (see the kdgan method's docs).", "",
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
        "without Gumbel (categorical samples, score log p_c(z))": {"sampler": "categorical"},
        "with Gumbel (score log p_c(z) at z = argmax y)": {"sampler": "gumbel", "score": "discrete"},
        "with Gumbel (score log q_c(y), concrete density)": {"sampler": "gumbel", "score": "concrete"},
    }
    curves: Dict[str, Dict[str, List[float]]] = {}
    per_seed: Dict[str, List[float]] = {}  # variant -> per-seed mean adversarial-gradient variance
    for vname, loss in variants.items():
        adv_all, ds_all = [], []
        for seed in seeds:
            cfg = grid.resolve([_merge(_base(sc, 100, out), {
                "name": "kdgan-fig7", "method": "kdgan", "seed": seed, "teacher": {"checkpoint": str(t)},
                "model": {"name": "mlp", "kwargs": {"hidden": [800, 800]}}, "data": {"batch_size": 20},
                "loss": {**loss, "disc_model": "lenet", "disc_kwargs": sc["teacher_kwargs"]}})], overrides)
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


def in_process_game(cfg: Any) -> tuple:
    """``(method, datasets)``: the KDGAN game of ``cfg`` built and seeded for play in this process on the
    CPU, one ``training_step`` at a time without the engine loop (Fig. 7, the teacher-collapse traces)."""
    import torch

    from kdlab.methods import KDGAN
    from kdlab.runner import datasets_for

    torch.manual_seed(cfg.seed)
    data = datasets_for(cfg)
    m = KDGAN(cfg, data.spec)

    class _CPU:
        device = torch.device("cpu")

        @staticmethod
        def backward(loss):
            loss.backward()

    m.fabric = _CPU()
    m.train()
    return m, data


def _grad_var(m, batch, which: str, draws: int) -> float:
    """Mean per-parameter variance of the classifier's gradient of one term over ``draws`` evaluations."""
    import torch

    c, t, d = m.players["classifier"], m.players["teacher"], m.players["discriminator"]
    x = batch.x
    xt = batch.teacher_input  # the teacher's (privileged) view, if any
    params = [p for p in c.net.parameters()]  # the classifier network (c is a kdlab.terms.Student)
    with torch.no_grad():
        d_logits, t_logits = d(x), t(xt)
    grads = []
    gen = torch.Generator().manual_seed(1234)
    for _ in range(draws):
        if which == "adv":
            loss = m.cfg.loss.alpha * m.adversarial_term(c(x).out, d_logits)
        else:
            idx = torch.randperm(x.shape[0], generator=gen)[:20]
            loss = m.cfg.loss.beta * m.distill_term(c(x[idx]).out, t_logits[idx])
        g = torch.autograd.grad(loss, params)
        grads.append(torch.cat([v.flatten() for v in g]))
    return float(torch.stack(grads).var(0).mean())
