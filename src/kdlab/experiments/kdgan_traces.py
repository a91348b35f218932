"""Diagnostics of KDGAN games, computed inside the engine by callbacks through the read-only
:class:`kdlab.engine.callbacks.PlayersView` (``kdgan-teacher-collapse``, ``kdgan-fig7``).

Every game these experiments study is an ordinary engine run (a grid cell); its callbacks read the players
by name (``classifier``, ``teacher``, ``discriminator``), compute with clones of their weights, and write
their trace to ``<run>/diagnostics/<kind>-<settings>.json`` at the end of the run, so a finished cell is
reused with its trace (:func:`kdlab.experiments.grid.run_cell` ``needs``) and a cell traced with other
settings is trained again. The KDGAN estimators are rebuilt here from the pure functions of
:mod:`kdlab.losses.kdgan` (``tests/test_callbacks.py`` checks them against the method's own).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from kdlab.engine.callbacks import Callback, PlayerHandle, PlayersView
from kdlab.losses import kdgan as K

#: where the traces go, relative to the run directory
DIAGNOSTICS = "diagnostics"


def trace_file(kind: str, **settings: Any) -> str:
    """The trace's path relative to the run directory: ``diagnostics/<kind>-<key><value>-....json`` (its
    settings in the name, so a trace of other settings is not taken for this one)."""
    return f"{DIAGNOSTICS}/{kind}" + "".join(f"-{k}{v}" for k, v in settings.items()) + ".json"


def read_trace(run: Path, file: str) -> List[Dict[str, float]]:
    """The rows of the trace ``file`` of finished run ``run``.

    Raises:
        FileNotFoundError: the run has no such trace (names the file).
    """
    path = Path(run) / file
    if not path.is_file():
        raise FileNotFoundError(f"run {str(run)!r} holds no trace {file!r}; train the cell again (it is trained again "
                                "automatically when run through kdlab reproduce)")
    return json.loads(path.read_text())["rows"]


class TraceCallback(Callback):
    """Base of the trace callbacks: rows collected in :attr:`rows`, written by rank 0 at the end of the
    run to ``run_dir/<file>`` as ``{"settings": ..., "rows": [...]}`` (atomically)."""

    def __init__(self, file: str, settings: Optional[Dict[str, Any]] = None) -> None:
        self.file, self.settings = file, dict(settings or {})
        self.rows: List[Dict[str, float]] = []

    def on_fit_end(self, view: PlayersView) -> None:
        from kdlab.engine import atomic_write_text

        if view.run_dir is not None:
            atomic_write_text(view.run_dir / self.file, json.dumps({"settings": self.settings, "rows": self.rows}, indent=1) + "\n")


class SavePlayer(Callback):
    """At the end of the run (rank 0): player ``player`` saved as a kdlab classifier file ``run_dir/<file>``
    (e.g. d after a warm-up, so that the next run starts from it with ``players.disc_init=<that file>``).
    The player must be a registry classifier (LeNet, MLP, ...)."""

    def __init__(self, player: str, file: str) -> None:
        self.player, self.file = player, file

    def on_fit_end(self, view: PlayersView) -> None:
        from kdlab.engine import save_classifier

        if view.run_dir is not None:
            save_classifier(view.module(self.player).copy().cpu(), view.run_dir / self.file, data=view.cfg.data.name)


# ----------------------------------------------------------------------------- KDGAN's pieces, from the pure functions


def kdgan_tau(players: Any, epoch: int) -> float:
    """The Gumbel temperature at epoch ``epoch`` (0-based) of a KDGAN run with ``players`` settings:
    ``max(tau_min, tau_start * tau_decay ** (epoch // tau_every))``."""
    return max(players.tau_min, players.tau_start * players.tau_decay ** (int(epoch) // int(players.tau_every)))


def adversarial_surrogate(players: Any, term: Any, tau: float, logits: torch.Tensor, d_logits: torch.Tensor,
                          generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The scalar surrogate whose gradient estimates ``grad E_{y~p}[log(1 - p_d(x, y))]``, as KDGAN's players'
    ``kdgan_adversarial`` term computes it (``term.estimator`` exact | code | paper | pathwise, ``term.score``,
    ``term.baseline``; the game's ``players.sampler`` and ``players.k``), unweighted (without alpha).

    Args:
        players: the run's ``players`` section. term: the player's ``kdgan_adversarial`` config.
        tau: the Gumbel temperature (:func:`kdgan_tau`).
        logits: the player's logits [B, K] (with a graph to what the gradient is taken of).
        d_logits: the discriminator's logits [B, K] (no graph needed).
        generator: draws the pseudo labels (on the logits' device); None: the global stream.
    """
    if term.estimator == "exact":
        return K.expected_reward(logits, d_logits).mean()
    if term.estimator == "pathwise":
        return K.pathwise_surrogate(logits, d_logits, tau, players.k, generator)
    if players.sampler == "categorical":
        log_y, z = None, K.sample_labels(logits, players.k, generator)
    else:
        log_y, z = K.gumbel_softmax_sample(logits, tau, players.k, generator)
    if term.estimator == "code":
        return K.code_surrogate(logits, z, d_logits)
    score = K.concrete_log_density(logits, log_y, tau) if term.score == "concrete" else None
    rewards = K.adversarial_rewards(d_logits, z)
    return K.reinforce_surrogate(logits, z, rewards, term.baseline, d_logits=d_logits, score_logp=score)


def handle_accuracy(net: PlayerHandle, batches: Sequence[Any], view: str = "student") -> float:
    """Top-1 accuracy (%) of the network behind ``net`` in eval mode over ``batches`` (labelled
    :class:`kdlab.data.Batch` es; ``view="teacher"`` scores ``batch.teacher_input``), with clones of its
    weights (one clone for all batches)."""
    params, buffers, dev = net.parameters(), net.buffers(), net.device
    correct = total = 0
    with torch.no_grad():
        for b in batches:
            x = (b.teacher_input if view == "teacher" else b.x).to(dev)
            logits = net.functional(x, params=params, buffers=buffers, train=False)
            correct += int((logits.argmax(1) == b.y.to(dev)).sum())
            total += int(b.y.shape[0])
    return 100.0 * correct / max(total, 1)


def d_scores(d: PlayerHandle, x: torch.Tensor, y: torch.Tensor) -> tuple:
    """(mean ``p_d(x, y)`` of the true labels, mean of the other labels, share of images on which some other
    label scores above the true one: d's ranking, which the players' gradients follow), d in its live mode."""
    dev = d.device
    x, y = x.to(dev), y.to(dev)
    with torch.no_grad():
        p = torch.sigmoid(d.functional(x))
    true = p.gather(1, y[:, None])[:, 0]
    best_other = p.scatter(1, y[:, None], -1.0).max(1).values
    return (float(true.mean()), float(((p.sum(1) - true) / (p.shape[1] - 1)).mean()),
            float((best_other > true).float().mean()))


# ----------------------------------------------------------------------------- the callbacks


class CollapseTrace(TraceCallback):
    """``kdgan-teacher-collapse``: at game step 0, 4, 8 and every ``every`` steps up to ``until``: the
    teacher's test accuracy (%, eval mode), d's mean score of the true and of the other labels on ``probe``
    and the share of ``probe`` images d mis-ranks (rows ``step, teacher_acc, pd_true, pd_other, d_misrank``).

    Args:
        test: labelled test batches. probe: one labelled batch of training images.
        every: steps between records. until: the last game step recorded.
        offset: game steps played before this run (a warm-up run's steps); this run's step s is game step
            ``offset + s``, and step 0 is recorded only when ``offset`` is 0.
        file: the trace's path in the run directory (:func:`trace_file`).
    """

    def __init__(self, test: Sequence[Any], probe: Any, every: int, until: int, offset: int, file: str) -> None:
        super().__init__(file, {"every": every, "until": until, "offset": offset})
        self.test, self.probe, self.every, self.until, self.offset = list(test), probe, int(every), int(until), int(offset)

    def _record(self, view: PlayersView, step: int) -> None:
        acc = handle_accuracy(view.module("teacher"), self.test, view="teacher")
        true, other, misrank = d_scores(view.module("discriminator"), self.probe.x, self.probe.y)
        self.rows.append({"step": step, "teacher_acc": acc, "pd_true": true, "pd_other": other, "d_misrank": misrank})

    def on_fit_start(self, view: PlayersView) -> None:
        if self.offset == 0 and view.step == 0:
            self._record(view, 0)

    def on_step_end(self, view: PlayersView, batch: Any, step: int, logs: Any) -> None:
        s = self.offset + step
        if s <= self.until and (s % self.every == 0 or s in (4, 8)):
            self._record(view, s)


class GradVariance(TraceCallback):
    """``kdgan-fig7``: at the start of every epoch (before training it), the mean over the classifier
    network's parameters of the per-parameter variance of its gradient of ``alpha * A_c`` over ``draws``
    independent sample draws on all of ``full``, and of ``beta * L_DS^c`` over ``draws`` random minibatches
    of ``data.batch_size`` images (rows ``epoch, adv, ds``).

    The sample draws use a generator of their own, seeded by ``(seed, epoch)``, and the minibatches one
    seeded 1234 at every record, so the trace does not depend on the training's random stream (nor the
    training on it).
    """

    def __init__(self, full: Any, draws: int, file: str) -> None:
        super().__init__(file, {"draws": draws})
        self.full, self.draws = full, int(draws)

    def on_fit_start(self, view: PlayersView) -> None:
        if view.epoch == 0:
            self._record(view)

    def on_epoch_end(self, view: PlayersView, epoch: int, metrics: Any) -> None:
        if view.epoch < int(view.cfg.trainer.epochs):  # the start of the next epoch
            self._record(view)

    def _record(self, view: PlayersView) -> None:
        self.rows.append({"epoch": view.epoch, "adv": grad_variance(view, self.full, "adv", self.draws),
                          "ds": grad_variance(view, self.full, "ds", self.draws)})


def grad_variance(view: PlayersView, batch: Any, which: str, draws: int) -> float:
    """Mean per-parameter variance of the gradient of KDGAN's classifier network of one term over ``draws``
    evaluations: ``which="adv"``, ``alpha * A_c`` on all of ``batch`` (new pseudo-label draws each time);
    ``"ds"``, ``beta * L_DS^c`` on a random minibatch of ``data.batch_size`` images each time. Gradients are
    taken of clones of the parameters (the live classifier is untouched).

    Raises:
        ValueError: ``which`` is neither ``adv`` nor ``ds``.
    """
    if which not in ("adv", "ds"):
        raise ValueError(f"which = {which!r}; accepted: adv, ds")
    lc, terms = view.cfg.players, view.cfg.objective.student  # the classifier's kdgan_adversarial and kdgan_distill
    c = view.module("classifier")  # a kdlab.terms.Student: its network is "net."
    params = c.parameters()
    net = [v for k, v in params.items() if k.startswith("net.") and v.requires_grad]
    dev = c.device
    x, xt = batch.x.to(dev), batch.teacher_input.to(dev)
    with torch.no_grad():
        d_logits, t_logits = view.functional("discriminator", x), view.functional("teacher", xt)
    tau = kdgan_tau(lc, view.epoch)
    minibatch = torch.Generator().manual_seed(1234)
    draw = torch.Generator(device=dev).manual_seed(int(view.cfg.seed) * 1000003 + 7919 * int(view.epoch) + 17)
    size = min(int(view.cfg.data.batch_size), x.shape[0])
    grads = []
    for _ in range(draws):
        if which == "adv":
            loss = lc.alpha * terms.kdgan_adversarial.weight * adversarial_surrogate(
                lc, terms.kdgan_adversarial, tau, c.functional(x, params=params).out, d_logits, draw)
        else:
            idx = torch.randperm(x.shape[0], generator=minibatch)[:size].to(dev)
            ds = terms.kdgan_distill  # weight beta
            loss = ds.weight * K.kdgan_distill_loss(c.functional(x[idx], params=params).out, t_logits[idx],
                                                    ds.mode, ds.temperature)
        g = torch.autograd.grad(loss, net)
        grads.append(torch.cat([v.flatten() for v in g]))
    return float(torch.stack(grads).var(0).mean())
