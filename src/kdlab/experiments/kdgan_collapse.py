"""``kdlab reproduce kdgan-teacher-collapse``: why KDGAN's teacher collapses at the published learning rate
(Wang et al. 2018; the released code trains every player with Adam 5e-4).

One KDGAN game per variant on n = 500 Fashion-MNIST images (the small Table-4 teacher and classifier),
trained in-process for a fixed number of steps; every few steps the teacher's test accuracy and the
discriminator's mean score of the true label, ``p_d(x, y)``, and of the other labels. The variants test
the hypotheses one at a time:

* the published setting (teacher lr 5e-4, d started from the teacher's weights, one d/t/c update per batch);
* d started from scratch / warmed up alone first (is the collapse d's uncalibrated start?);
* the published epoch schedule (d first, then t, then c);
* a stronger distillation anchor for the teacher (gamma = 1) and lower teacher rates (1e-4, 3e-5);
* the exact adversarial gradient and the released code's estimator (is it sampling noise?);
* a cross-entropy anchor on the true labels (``teacher_ce = 1``) at the published rate: the protocol's fix.

Besides the teacher's accuracy the trace records d's ranking: the share of training images on which d
scores some wrong label above the true one. Lemma 4.1's optimal d is ``p_u / (p_u + p_alpha)``: 0 on
wrong labels and ~1 / (1 + p_alpha(y|x)) ~ 0.5 on the true label once the players are mostly right,
but d only learns where labels are sampled, so the labels nobody samples keep whatever score d's
generalisation gives them. Where they outrank the true label the players' adversarial gradient points
away from it.

Scale ``small``: 1 seed, 120 game steps (~4 min on 2 CPU cores); ``full``: 3 seeds, 400 steps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kdlab.experiments import EXPERIMENTS, grid
from kdlab.experiments.kdgan import SCALE as KDGAN_SCALE
from kdlab.experiments.kdgan import _base, _merge, _teacher, in_process_game

N = 500
def _both(**keys: Any) -> Dict[str, Any]:
    """``objective`` keys of both players' ``kdgan_adversarial`` terms."""
    return {p: {"kdgan_adversarial": dict(keys)} for p in ("student", "teacher")}


#: variant -> (KDGAN config sections merged over the cell, steps during which d alone is trained first)
VARIANTS: Dict[str, tuple] = {
    "published: teacher lr 5e-4, d from the teacher, 1/1/1 per batch": ({"players": {"teacher_lr": 5e-4}}, 0),
    "d from scratch, warmed up alone for 40 steps": ({"players": {"teacher_lr": 5e-4, "disc_init": "scratch"}}, 40),
    "d from the teacher, warmed up alone for 40 steps": ({"players": {"teacher_lr": 5e-4}}, 40),
    "epoch schedule d/t/c = 2/1/1 epochs": ({"players": {"teacher_lr": 5e-4, "schedule": [2, 1, 1], "schedule_unit": "epoch"}}, 0),
    "gamma = 1 (strong distillation anchor)": ({"players": {"teacher_lr": 5e-4},
                                                "objective": {"teacher": {"kdgan_distill": {"weight": 1.0}}}}, 0),
    "teacher lr 1e-4": ({"players": {"teacher_lr": 1e-4}}, 0),
    "teacher lr 3e-5": ({"players": {"teacher_lr": 3e-5}}, 0),
    "exact adversarial gradient (no sampling)": ({"players": {"teacher_lr": 5e-4}, "objective": _both(estimator="exact")}, 0),
    "the released code's estimator (soft BCE target)": ({"players": {"teacher_lr": 5e-4}, "objective": _both(estimator="code")}, 0),
    "cross-entropy anchor teacher_ce = 1, lr 5e-4 (the protocol's fix)": ({"players": {"teacher_lr": 5e-4},
                                                                          "objective": {"teacher": {"ce": {"weight": 1.0}}}}, 0),
}
SCALES = {"small": {"seeds": [0], "steps": 120, "every": 20}, "full": {"seeds": [0, 1, 2], "steps": 400, "every": 40}}


def _d_scores(m: Any, x, y) -> tuple:
    """Mean ``p_d(x, y)`` of the true labels and of the other labels, and the share of images on which
    some other label scores above the true one (d's ranking, which the players' gradients follow)."""
    import torch

    with torch.no_grad():
        p = torch.sigmoid(m.players["discriminator"](x))
    true = p.gather(1, y[:, None])[:, 0]
    best_other = p.scatter(1, y[:, None], -1.0).max(1).values
    return (float(true.mean()), float(((p.sum(1) - true) / (p.shape[1] - 1)).mean()),
            float((best_other > true).float().mean()))


def _play(cfg: Any, warm: int, steps: int, every: int) -> List[Dict[str, float]]:
    from kdlab.data import make_loader
    from kdlab.metrics import evaluate_accuracy

    m, data = in_process_game(cfg)
    test = make_loader(data.test, 1000, False, cfg.seed)
    probe = next(iter(make_loader(data.train, 500, False, cfg.seed)))
    trace, step, epoch = [], 0, 0
    while step <= steps:
        for b in make_loader(data.train, cfg.data.batch_size, True, cfg.seed, epoch):
            if step % every == 0 or step in (4, 8):
                true, other, misrank = _d_scores(m, probe.x, probe.y)
                acc = evaluate_accuracy(m.teacher_model(), test, device="cpu", view="teacher")
                trace.append({"step": step, "teacher_acc": acc, "pd_true": true, "pd_other": other, "d_misrank": misrank})
                m.train()
            if step >= steps:
                return trace
            if step < warm:
                m.d_step(b.x, b.y, b.teacher_input)
            else:
                m.training_step(b, step)
            step += 1
        m.on_epoch_end(epoch)
        epoch += 1
    return trace


@EXPERIMENTS.register("kdgan-teacher-collapse", help="KDGAN: why the teacher collapses at the published learning rate")
def teacher_collapse(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
    """Play every variant; write the teacher-accuracy and d-calibration traces (report, plot, results.json).

    Raises: ValueError: unknown scale (lists small, full).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; accepted: {', '.join(SCALES)}")
    sc, ksc = SCALES[scale], KDGAN_SCALE["small" if scale == "small" else "full"]
    seeds = list(seeds) if seeds else sc["seeds"]
    out = Path(out_dir)
    teacher = _teacher(ksc, N, out, list(overrides))
    traces: Dict[str, List[List[Dict[str, float]]]] = {}
    for name, (sections, warm) in VARIANTS.items():
        for seed in seeds:
            cfg = grid.resolve([_merge(_base(ksc, N, out), {
                "name": "kdgan-teacher-collapse", "method": "kdgan", "seed": seed, "teacher": {"checkpoint": str(teacher)},
                "model": {"name": "mlp", "kwargs": {"hidden": [800, 800]}},
                "players": {"disc_model": "lenet", "disc_kwargs": ksc["teacher_kwargs"]}}, sections)], overrides)
            traces.setdefault(name, []).append(_play(cfg, warm, sc["steps"], sc["every"]))
    return _write(out / "kdgan-teacher-collapse", scale, seeds, traces)


def _write(out: Path, scale: str, seeds: List[int], traces: Dict[str, List[List[Dict[str, float]]]]) -> Path:
    from matplotlib.figure import Figure

    from kdlab.report import markdown_table
    from kdlab.report.plots import save_figure

    steps = [r["step"] for r in next(iter(traces.values()))[0]]
    mean = {n: [grid.mean([t[i]["teacher_acc"] for t in ts]) for i in range(len(steps))] for n, ts in traces.items()}
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for n, ys in mean.items():
        ax.plot(steps, ys, marker="o", ms=3, label=n)
    ax.set_xlabel("game step")
    ax.set_ylabel("teacher test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    save_figure(fig, out / "plots" / "teacher_acc.png")
    rows = [[n] + [f"{v:.1f}" for v in ys] for n, ys in mean.items()]
    mis = {n: [grid.mean([t[i]["d_misrank"] for t in ts]) for i in range(len(steps))] for n, ts in traces.items()}
    mis_rows = [[n] + [f"{100 * v:.0f}" for v in ys] for n, ys in mis.items()]
    d0 = {n: (ts[0][0]["pd_true"], ts[0][0]["pd_other"]) for n, ts in traces.items()}
    lines = [f"Scale `{scale}`, seeds {seeds}; n = {N} Fashion-MNIST images, batch 100, the small Table-4 LeNet teacher "
             "and MLP 784-800-800-10 classifier, Adam 5e-4 for the classifier and d. Cells: the teacher's test accuracy (%) "
             "after that many game steps (mean over seeds).", "",
             markdown_table(["variant"] + [str(s) for s in steps], rows), "", "![teacher accuracy](plots/teacher_acc.png)", "",
             "The discriminator's mean p_d(x, y) at step 0, true label / other labels: "
             + "; ".join(f"{n}: {a:.2f} / {b:.2f}" for n, (a, b) in d0.items()), "",
             "## d's ranking", "",
             "Share (%) of 500 training images on which d scores some wrong label above the true one, after that many steps. "
             "The players' adversarial gradient moves their mass towards the labels d scores highest, so on these images "
             "it points away from the true label.", "",
             markdown_table(["variant"] + [str(s) for s in steps], mis_rows), ""]
    return grid.write_report(out, "KDGAN: the teacher's collapse at the published learning rate", lines,
                             {"scale": scale, "seeds": seeds, "traces": traces})
