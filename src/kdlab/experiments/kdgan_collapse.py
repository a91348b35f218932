"""``kdlab reproduce kdgan-teacher-collapse``: why KDGAN's teacher collapses at the published learning rate
(Wang et al. 2018; the released code trains every player with Adam 5e-4).

One KDGAN game per variant on n = 500 Fashion-MNIST images (the small Table-4 teacher and classifier; the
teacher is now pre-trained on the whole training split, the accuracies quoted below were measured with the
former teacher trained on the 500 images),
trained for a fixed number of steps; every few steps the teacher's test accuracy and the
discriminator's mean score of the true label, ``p_d(x, y)``, and of the other labels. The variants test
the hypotheses one at a time:

* the published setting (teacher lr 5e-4, d started from the teacher's weights, one d/t/c update per batch);
* d started from scratch / warmed up alone first (is the collapse d's uncalibrated start?);
* the published epoch schedule (d first, then t, then c);
* a stronger distillation anchor for the teacher (gamma = 1) and lower teacher rates (1e-4, 3e-5);
* the exact adversarial gradient and the released code's estimator (is it sampling noise?);
* a cross-entropy anchor on the true labels (the teacher's ``ce`` term, weight 1) at the published rate: what holds
  the teacher (not in the paper: ``kdgan-table4``'s labelled diagnostic row).

Besides the teacher's accuracy the trace records d's ranking: the share of training images on which d
scores some wrong label above the true one. Lemma 4.1's optimal d is ``p_u / (p_u + p_alpha)``: 0 on
wrong labels and ~1 / (1 + p_alpha(y|x)) ~ 0.5 on the true label once the players are mostly right,
but d only learns where labels are sampled, so the labels nobody samples keep whatever score d's
generalisation gives them. Where they outrank the true label the players' adversarial gradient points
away from it.

Each variant is an ordinary engine run (a grid cell); the traces are taken inside it by
:class:`kdlab.experiments.kdgan_traces.CollapseTrace` through the read-only view of the players. A
warm-up ("d alone for 40 steps") is a first run with ``players.schedule = [1, 0, 0]`` (d only) for the
warm-up's whole epochs, whose d (saved by :class:`~kdlab.experiments.kdgan_traces.SavePlayer`) and
classifier the game run starts from (``players.disc_init``, ``model.checkpoint``), with ``players.tau_start``
advanced by the warm-up's epochs so that the Gumbel temperature continues; the game's step numbers continue
the warm-up's. Unlike one continuous game, d's Adam moments restart after the warm-up and the game run
draws its random numbers from the seed again, so the two warm-up rows move within seed noise relative to the
former in-process loop; the other rows play exactly the game they played before.

Scale ``small``: 1 seed, 120 game steps: ~20 s per game on 2 idle CPU cores (the former in-process loop:
~13 s; the engine adds per-epoch validation, checkpoints and the run's finalisation), ~4 min in all;
``full``: 3 seeds, 400 steps.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kdlab.experiments import EXPERIMENTS, grid
from kdlab.experiments.kdgan import SCALE as KDGAN_SCALE
from kdlab.experiments.kdgan import _base, _merge, _teacher
from kdlab.experiments.kdgan_traces import CollapseTrace, SavePlayer, read_trace, trace_file

N = 500
def _lr(rate: float, **players: Any) -> Dict[str, Any]:
    return {"players": {"teacher_lr": rate, **players}}


def _both(**keys: Any) -> Dict[str, Any]:
    """``objective`` keys of both players' ``kdgan_adversarial`` terms."""
    return {p: {"kdgan_adversarial": dict(keys)} for p in ("student", "teacher")}


#: variant -> (run tag, KDGAN config sections merged over the run, steps during which d alone is trained first)
VARIANTS: Dict[str, tuple] = {
    "published: teacher lr 5e-4, d from the teacher, 1/1/1 per batch": ("published", _lr(5e-4), 0),
    "d from scratch, warmed up alone for 40 steps": ("scratch-warm", _lr(5e-4, disc_init="scratch"), 40),
    "d from the teacher, warmed up alone for 40 steps": ("teacher-warm", _lr(5e-4), 40),
    "epoch schedule d/t/c = 2/1/1 epochs": ("epochs211", _lr(5e-4, schedule=[2, 1, 1], schedule_unit="epoch"), 0),
    "gamma = 1 (strong distillation anchor)": ("gamma1", {**_lr(5e-4), "objective": {"teacher": {"kdgan_distill": {"weight": 1.0}}}}, 0),
    "teacher lr 1e-4": ("tlr1e-4", _lr(1e-4), 0),
    "teacher lr 3e-5": ("tlr3e-5", _lr(3e-5), 0),
    "exact adversarial gradient (no sampling)": ("exact", {**_lr(5e-4), "objective": _both(estimator="exact")}, 0),
    "the released code's estimator (soft BCE target)": ("code", {**_lr(5e-4), "objective": _both(estimator="code")}, 0),
    "cross-entropy anchor teacher_ce = 1, lr 5e-4 (not in the paper; table 4's diagnostic row)": (
        "tce1", {**_lr(5e-4), "objective": {"teacher": {"ce": {"weight": 1.0}}}}, 0),
}
SCALES = {"small": {"seeds": [0], "steps": 120, "every": 20}, "full": {"seeds": [0, 1, 2], "steps": 400, "every": 40}}
#: d at the end of a warm-up run (the game run's players.disc_init)
D_FILE = "discriminator.safetensors"


def _game(ksc: Dict[str, Any], out: Path, teacher: Path, seed: int, name: str, label: str, sections: Dict[str, Any],
          model: Dict[str, Any], epochs: int) -> Dict[str, Any]:
    """The config of one KDGAN run of the diagnosis (n = 500, the small Table-4 networks)."""
    return _merge(_base(ksc, N, out), {
        "name": name, "label": label, "method": "kdgan", "seed": seed, "teacher": {"checkpoint": str(teacher)},
        "model": model, "players": {"disc_model": "lenet", "disc_kwargs": ksc["teacher_kwargs"]},
        "trainer": {"epochs": epochs}}, sections)


def _play(ksc: Dict[str, Any], sc: Dict[str, Any], out: Path, teacher: Path, seed: int, variant: tuple, label: str,
          spe: int, test: Sequence[Any], probe: Any, overrides: Sequence[str]) -> List[Dict[str, float]]:
    """One variant's game (its warm-up run first, if any), traced at game steps 0, 4, 8 and every
    ``every`` up to ``steps``; ``spe``: steps per epoch. Returns the trace's rows (step order)."""
    tag, sections, warm = variant
    steps, every = sc["steps"], sc["every"]
    file = trace_file("collapse", every=every, steps=steps)
    model: Dict[str, Any] = {"name": "mlp", "kwargs": {"hidden": [800, 800]}}
    rows: List[Dict[str, float]] = []
    warm_epochs = math.ceil(warm / spe)
    done = warm_epochs * spe  # the warm-up's steps: whole epochs
    if warm_epochs:
        src = _game(ksc, out, teacher, seed, f"kdgan-collapse-{tag}-warmup-s{seed}", f"{label} (warm-up: d alone)",
                    _merge(sections, {"players": {"schedule": [1, 0, 0], "schedule_unit": "step"}}), model, warm_epochs)
        cb = CollapseTrace(test, probe, every, until=min(done, steps), offset=0, file=file)
        run = grid.run_cell([src], overrides, callbacks=[cb, SavePlayer("discriminator", D_FILE)], needs=[file, D_FILE])
        rows += read_trace(run, file)
        lc = grid.resolve([src], overrides).players
        sections = _merge(sections, {"players": {"disc_init": str(run / D_FILE),
                                                "tau_start": lc.tau_start * lc.tau_decay ** (warm_epochs // lc.tau_every)}})
        model = {**model, "checkpoint": str(run)}  # the classifier as it started (the warm-up does not train it)
    if steps > done:
        src = _game(ksc, out, teacher, seed, f"kdgan-collapse-{tag}-s{seed}", label, sections, model,
                    math.ceil((steps - done) / spe))
        cb = CollapseTrace(test, probe, every, until=steps, offset=done, file=file)
        rows += read_trace(grid.run_cell([src], overrides, callbacks=[cb], needs=[file]), file)
    return rows


@EXPERIMENTS.register("kdgan-teacher-collapse", help="KDGAN: why the teacher collapses at the published learning rate")
def teacher_collapse(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
    """Play every variant (engine runs, traced by callbacks); write the teacher-accuracy and d-ranking
    traces (report, plot, results.json) to ``<out_dir>/kdgan-teacher-collapse``.

    Raises: ValueError: unknown scale (lists small, full).
    """
    from kdlab.data import make_loader

    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; accepted: {', '.join(SCALES)}")
    sc, ksc = SCALES[scale], KDGAN_SCALE["small" if scale == "small" else "full"]
    seeds = list(seeds) if seeds else sc["seeds"]
    out = Path(out_dir)
    teacher = _teacher(ksc, N, out, list(overrides))
    data, cfg = _data(ksc, out, teacher, seeds[0], overrides)
    spe = math.ceil(len(data.transfer) / int(cfg.data.batch_size))
    test = list(make_loader(data.test, 1000, False, cfg.seed))
    probe = next(iter(make_loader(data.train, 500, False, cfg.seed)))
    traces: Dict[str, List[List[Dict[str, float]]]] = {}
    for name, variant in VARIANTS.items():
        for seed in seeds:
            traces.setdefault(name, []).append(_play(ksc, sc, out, teacher, seed, variant, name, spe, test, probe, overrides))
    return _write(out / "kdgan-teacher-collapse", scale, seeds, traces)


def _data(ksc: Dict[str, Any], out: Path, teacher: Path, seed: int, overrides: Sequence[str]) -> tuple:
    """``(datasets, config)`` of the diagnosis' runs (the same images for every variant and seed)."""
    from kdlab.runner import datasets_for

    cfg = grid.resolve([_game(ksc, out, teacher, seed, "kdgan-collapse-data", "", {}, {"name": "mlp"}, 1)], overrides)
    return datasets_for(cfg), cfg


def _write(out: Path, scale: str, seeds: List[int], traces: Dict[str, List[List[Dict[str, float]]]]) -> Path:
    from matplotlib.figure import Figure

    from kdlab.report import markdown_table
    from kdlab.report.plots import save_figure

    # the steps every trace recorded (all of them unless an override cut a run short)
    steps = sorted(set.intersection(*[{r["step"] for r in t} for ts in traces.values() for t in ts]))
    at = {n: [{r["step"]: r for r in t} for t in ts] for n, ts in traces.items()}
    mean = {n: [grid.mean([t[s]["teacher_acc"] for t in ts]) for s in steps] for n, ts in at.items()}
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
    mis = {n: [grid.mean([t[s]["d_misrank"] for t in ts]) for s in steps] for n, ts in at.items()}
    mis_rows = [[n] + [f"{100 * v:.0f}" for v in ys] for n, ys in mis.items()]
    d0 = {n: (ts[0][0]["pd_true"], ts[0][0]["pd_other"]) for n, ts in traces.items()}
    lines = [f"Scale `{scale}`, seeds {seeds}; n = {N} Fashion-MNIST images, batch 100, the small Table-4 LeNet teacher "
             "and MLP 784-800-800-10 classifier, Adam 5e-4 for the classifier and d. Cells: the teacher's test accuracy (%) "
             "after that many game steps (mean over seeds). Every game is an engine run traced by a callback; a warm-up "
             "row is a d-only run (whole epochs) whose d and classifier the game run continues from, d's Adam moments "
             "restarting there.", "",
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
