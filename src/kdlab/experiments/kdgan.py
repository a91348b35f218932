"""The shared protocol of KDGAN's figures and diagnostics (Wang et al. 2018, appendix D) on real Fashion-MNIST.

Tables 3 and 4 are declarative specs, ``recipes/experiments/kdgan-table3.yaml`` and ``kdgan-table4.yaml``
(their comments give the protocol, the scales, the claims and the cost). This module holds the cells the figure
and diagnostic experiments share, with the same settings as those specs: ``kdgan-fig6`` / ``kdgan-fig7``
(:mod:`kdlab.experiments.kdgan_figs`) and the teacher's collapse at the published rate
(:mod:`kdlab.experiments.kdgan_collapse`).

Protocol: a validation split carved from the training split selects the checkpoint (never the test set); the
n-image subset is drawn once per n (subset seed 0); seeds vary initialisation, batch order and sampling. Every
optimiser is Adam (lr 5e-4, no schedule, the published code's setting). The published code pre-trains every
player, then plays outer epochs of 20 d-, 10 t- and 10 c-epochs (NOTES.md); here KDGAN's classifier starts from
one pre-trained with cross entropy on the n images (``pretrain_epochs``, one per seed), its d from a LeNet
pre-trained with cross entropy (seed 1), and the game cycles ``cycle`` = [d, t, c] epochs (the published 20/10/10
scaled by 1/10 at small scale) so that the classifier gets ``epochs`` epochs; the Gumbel temperature decays every
max(E / 36, 1) epochs (the code's rule) with E the game's epochs. The teacher plays at the published rate with the
paper's objective, no anchor to the labels (``TEACHER_CE`` is the anchor of the diagnostic row only).

Scales: ``full`` = the paper's sizes (appendix-C LeNet 32-64-1024 teacher and d, trained on the n images);
``small`` = n divided by 10, a narrower LeNet (8-16 channels, fc 128) pre-trained on the whole training split
(``teacher_data: all``: it stands 9.8-12.9 points above the classifier's CE start at n <= 1K).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kdlab.experiments import grid

#: the settings of kdgan-table4's scales (``recipes/experiments/kdgan-table4.yaml``, whose comment gives the small
#: teacher's margin over the CE start) and the figures' own (``fig_*``, ``gammas``). ``teacher_data``: ``n`` = the
#: teacher is pre-trained on the run's n images; ``all`` = on the whole training split, one teacher for every n.
SCALE = {
    "small": {"ns": [500, 1000, 5000], "teacher_kwargs": {"channels": [8, 16], "fc": 128},
              "teacher_data": "all", "teacher_epochs": 3, "epochs": 15, "val_size": 1000, "batch": 100,
              "fig_seeds": [0, 1, 2], "pretrain_epochs": 5, "cycle": [2, 1, 1], "teacher_lr": 5e-4,
              "gammas": [0.0, 1e-4, 1e-2, 1.0], "fig7_epochs": 6, "fig7_draws": 30},
    "full": {"ns": [5000, 10000, 50000, 55000], "teacher_kwargs": {}, "teacher_data": "n",
             "pretrain_epochs": 10, "cycle": [20, 10, 10], "teacher_lr": 5e-4,
             "teacher_epochs": 30, "epochs": 50, "val_size": 5000, "batch": 100, "fig_seeds": [0, 1, 2],
             "gammas": [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0], "fig7_epochs": 30, "fig7_draws": 100},
}
#: the teacher's cross-entropy anchor on the true labels: not in the paper, only in the labelled diagnostic row
TEACHER_CE = 1.0
#: the KDGAN row of :func:`_student` (its game's settings come from the scale)
KDGAN_ROW: Dict[str, Any] = {"method": "kdgan"}


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


def _merge(a: Dict[str, Any], *more: Dict[str, Any]) -> Dict[str, Any]:
    """``a`` with each of ``more`` merged over it in turn (nested dicts merged, other values replaced)."""
    out = dict(a)
    for b in more:
        for k, v in b.items():
            out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _run(cfg_dict: Dict[str, Any], overrides: Sequence[str]) -> Path:
    """The cell of ``cfg_dict`` with ``overrides`` (:func:`kdlab.experiments.grid.run_cell`)."""
    return grid.run_cell([cfg_dict], overrides)


def _teacher(sc, n: int, out: Path, overrides) -> Path:
    """The pre-trained LeNet teacher of the n-image runs: on those n images, or (``teacher_data: all``) on the
    whole training split less the validation images, one run for every n."""
    whole = sc["teacher_data"] == "all"
    tag = "all" if whole else f"n{n}"
    cfg = _merge(_base(sc, n, out), {"name": f"kdgan-teacher-{tag}", "label": f"LeNet teacher ({tag})", "method": "teacher",
                                     "model": {"name": "lenet", "kwargs": sc["teacher_kwargs"]},
                                     "trainer": {"epochs": sc["teacher_epochs"]}})
    if whole:
        cfg["data"]["n_per_class"] = None
    return _run(cfg, overrides)


def _pretrained(sc, n: int, seed: int, out: Path, overrides, model: Dict[str, Any], tag: str) -> Path:
    """A network pre-trained with cross entropy on the n images (the published code pre-trains every player)."""
    cfg = _merge(_base(sc, n, out), {"name": f"kdgan-pretrain-{tag}-n{n}-s{seed}", "label": f"{tag} pre-trained with CE",
                                     "method": "teacher", "seed": seed, "model": model,
                                     "trainer": {"epochs": sc["pretrain_epochs"]}})
    return _run(cfg, overrides)


def _student(sc, label: str, spec: Dict[str, Any], n: int, seed: int, teacher: Path, out: Path, overrides,
             hidden: int = 800, extra: Optional[Dict[str, Any]] = None, tag: str = "") -> Path:
    """One row x n x seed: every row starts from the same CE-pre-trained classifier (per seed); KDGAN plays
    the published epoch cycle with a CE-pre-trained d for as many classifier epochs as the other rows."""
    mlp = {"name": "mlp", "kwargs": {"hidden": [hidden, hidden]}}
    init = _pretrained(sc, n, seed, out, overrides, mlp, f"h{hidden}")
    players, epochs = {}, sc["epochs"]
    if spec["method"] == "kdgan":
        n_d, n_t, n_c = sc["cycle"]
        epochs = sc["epochs"] * (n_d + n_t + n_c) // n_c  # the classifier trains in n_c of every n_d + n_t + n_c
        disc = _pretrained(sc, n, 1, out, overrides, {"name": "lenet", "kwargs": sc["teacher_kwargs"]}, "d")
        # tau_min 0.01: below the published schedule's final 0.017, so no floor binds (the code has none)
        players.update({"disc_model": "lenet", "disc_kwargs": sc["teacher_kwargs"], "disc_init": str(disc),
                     "schedule": list(sc["cycle"]), "schedule_unit": "epoch", "teacher_lr": sc["teacher_lr"],
                     "tau_every": max(epochs // 36, 1), "tau_min": 0.01})
    cfg = _merge(_base(sc, n, out), {k: v for k, v in spec.items() if k != "method"}, {"players": players},
                 extra or {}, {
        "name": f"kdgan-{label.lower()}{tag}-h{hidden}-n{n}-s{seed}", "label": label, "method": spec["method"], "seed": seed,
        "teacher": {"checkpoint": str(teacher)}, "model": {**mlp, "checkpoint": str(init)},
        "trainer": {"epochs": epochs}})
    return _run(cfg, overrides)


def _protocol(scale: str, sc: Dict[str, Any], seeds: Sequence[int], overrides: Sequence[str] = ()) -> List[str]:
    return ([f"**Overrides applied to every run** (they take precedence over the protocol below): `{' '.join(overrides)}`", ""]
            if overrides else []) + [
        f"Scale **{scale}**: n = {', '.join(str(n) for n in sc['ns'])} training images "
        f"({'the paper' if scale == 'full' else 'the paper divided by 10'}), seeds {list(seeds)}, {sc['epochs']} epochs per run, "
        f"teacher LeNet {sc['teacher_kwargs'] or '32-64-1024 (appendix C)'} trained {sc['teacher_epochs']} epochs on "
        + ("the whole training split less the validation images (one teacher for every n, so that it stands well above "
           "the classifier's CE start as in the paper; see SCALE), " if sc["teacher_data"] == "all" else "the same n images, ")
        + "classifier MLP 784-800-800-10 unless stated, every row starting from the same classifier pre-trained with cross "
        f"entropy for {sc['pretrain_epochs']} epochs on the n images (one per seed); Adam 5e-4 for every player (KDGAN's "
        f"teacher: {sc['teacher_lr']:g}, the published rate, without an anchor to the labels as in the paper; the teacher with a "
        f"cross-entropy anchor of weight {TEACHER_CE:g}, not in the paper, is a labelled diagnostic row: see "
        "`kdgan-teacher-collapse`); "
        f"KDGAN's d pre-trained with cross entropy, the game cycling {sc['cycle']} d/t/c epochs "
        "so that its classifier gets as many epochs as every other row. Data: real Fashion-MNIST "
        f"(validation split of {sc['val_size']} images carved from the training split selects the checkpoint; test = the 10,000-image test split). "
        "Paper numbers are MNIST (which is much easier than Fashion-MNIST): compare orderings, not values.",
        "",
        "Cells: test accuracy (%) of the best-on-validation checkpoint, mean ± sample std over seeds; "
        "*last* = the weights after the final epoch. Every row selects by the same rule over the same candidates: the "
        "classifier after each epoch in which it trained (KDGAN: its c-epochs; its untouched start is never a candidate).",
        "",
    ]
