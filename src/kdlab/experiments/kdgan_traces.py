"""KDGAN's analyses (Wang et al. 2018): engine callbacks that trace a game through the read-only
:class:`kdlab.engine.callbacks.PlayersView`, registered for specs' ``callbacks:`` (:mod:`kdlab.compare.analyses`).

* ``kdgan-teacher-trace`` (``kdgan-fig6``, ``kdgan-teacher-collapse``): the teacher's test accuracy and d's
  ranking of the true label during the game; metrics ``teacher_acc_start``, ``teacher_acc_end``,
  ``teacher_acc_drop`` (start - end) and ``d_misrank_end``.
* ``kdgan-grad-variance`` (``kdgan-fig7``): the variance of the classifier's adversarial and distillation
  gradients at the start of every epoch; metrics ``adv_grad_var`` / ``ds_grad_var`` (mean over the epochs)
  and their log10.

Each reads the players by name (``classifier``, ``teacher``, ``discriminator``), computes with clones of their
weights and loads the run's own data (``datasets_for(view.cfg)``) at the start of the run. The KDGAN estimators
are rebuilt here from the pure functions of :mod:`kdlab.losses.kdgan` (``tests/test_callbacks.py`` checks them
against the method's own).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import torch

from kdlab.compare.analyses import AnalysisCallback, register_callback
from kdlab.engine.callbacks import PlayerHandle, PlayersView
from kdlab.losses import kdgan as K


_SPLITS: Dict[str, Any] = {}


def _splits(view: PlayersView) -> Any:
    """The run's train/val/test splits (its own ``data`` section; the last one kept for the next run of a grid)."""
    from omegaconf import OmegaConf

    from kdlab.runner import datasets_for

    key = OmegaConf.to_yaml(view.cfg.data)
    if key not in _SPLITS:
        _SPLITS.clear()
        _SPLITS[key] = datasets_for(view.cfg)
    return _SPLITS[key]


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


# ----------------------------------------------------------------------------- the analyses


@register_callback("kdgan-teacher-trace", metrics=("teacher_acc_start", "teacher_acc_end", "teacher_acc_drop",
                                                   "d_misrank_end"), trace=("step", ("teacher_acc", "d_misrank")),
                   help="KDGAN: the teacher's test accuracy and d's ranking of the true label during the game")
class TeacherTrace(AnalysisCallback):
    """The teacher's test accuracy (%, eval mode), d's mean score of the true and of the other labels on the
    first ``probe`` training images and the share of them d mis-ranks (trace rows ``step, teacher_acc, pd_true,
    pd_other, d_misrank``) at the start of the run, at game steps 4 and 8 and every ``every`` steps, and at its
    end. ``offset``: game steps played before this run (a warm-up run's), added to the step numbers."""

    def __init__(self, every: int, offset: int = 0, probe: int = 500) -> None:
        super().__init__()
        if int(every) < 1 or int(offset) < 0 or int(probe) < 1:
            raise ValueError(f"every = {every}, offset = {offset}, probe = {probe}: accepted: every >= 1, offset >= 0, "
                             "probe >= 1")
        self.every, self.offset, self.n_probe = int(every), int(offset), int(probe)
        self.test: Sequence[Any] = ()
        self.probe: Any = None

    def _record(self, view: PlayersView, step: int) -> None:
        acc = handle_accuracy(view.module("teacher"), self.test, view="teacher")
        true, other, misrank = d_scores(view.module("discriminator"), self.probe.x, self.probe.y)
        self.trace.append({"step": step, "teacher_acc": acc, "pd_true": true, "pd_other": other, "d_misrank": misrank})

    def on_fit_start(self, view: PlayersView) -> None:
        from kdlab.data import make_loader

        data = _splits(view)
        self.test = list(make_loader(data.test, 1000, False, view.cfg.seed))
        self.probe = next(iter(make_loader(data.train, self.n_probe, False, view.cfg.seed)))
        self._record(view, self.offset + view.step)

    def on_step_end(self, view: PlayersView, batch: Any, step: int, logs: Any) -> None:
        s = self.offset + step
        if s % self.every == 0 or s in (4, 8):
            self._record(view, s)

    def on_fit_end(self, view: PlayersView) -> None:
        if self.trace and self.trace[-1]["step"] != self.offset + view.step:
            self._record(view, self.offset + view.step)
        super().on_fit_end(view)

    def metrics(self) -> Dict[str, float]:
        if not self.trace:
            return {}
        first, last = self.trace[0], self.trace[-1]
        return {"teacher_acc_start": first["teacher_acc"], "teacher_acc_end": last["teacher_acc"],
                "teacher_acc_drop": first["teacher_acc"] - last["teacher_acc"], "d_misrank_end": last["d_misrank"]}


@register_callback("kdgan-grad-variance", metrics=("adv_grad_var", "adv_grad_var_log10", "ds_grad_var",
                                                   "ds_grad_var_log10"), trace=("epoch", ("adv", "ds")),
                   help="KDGAN: the variance of the classifier's adversarial and distillation gradients per epoch")
class GradVariance(AnalysisCallback):
    """At the start of every epoch (before training it), the mean over the classifier network's parameters of
    the per-parameter variance of its gradient of ``alpha * A_c`` over ``draws`` independent sample draws on
    all of the run's training images, and of ``beta * L_DS^c`` over ``draws`` random minibatches of
    ``data.batch_size`` images (trace rows ``epoch, adv, ds``); metrics: their means over the epochs and the
    log10 of those means.

    The sample draws use a generator of their own, seeded by ``(seed, epoch)``, and the minibatches one
    seeded 1234 at every record, so the trace does not depend on the training's random stream (nor the
    training on it).
    """

    def __init__(self, draws: int) -> None:
        super().__init__()
        if int(draws) < 2:
            raise ValueError(f"draws = {draws}: a variance needs at least 2 draws")
        self.draws, self.full = int(draws), None

    def on_fit_start(self, view: PlayersView) -> None:
        from kdlab.data import make_loader

        train = _splits(view).train
        self.full = next(iter(make_loader(train, len(train), False, view.cfg.seed)))
        if view.epoch == 0:
            self._record(view)

    def on_epoch_end(self, view: PlayersView, epoch: int, metrics: Any) -> None:
        if view.epoch < int(view.cfg.trainer.epochs):  # the start of the next epoch
            self._record(view)

    def _record(self, view: PlayersView) -> None:
        self.trace.append({"epoch": view.epoch, "adv": grad_variance(view, self.full, "adv", self.draws),
                           "ds": grad_variance(view, self.full, "ds", self.draws)})

    def metrics(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for key in ("adv", "ds") if self.trace else ():
            mean = sum(r[key] for r in self.trace) / len(self.trace)
            out[f"{key}_grad_var"], out[f"{key}_grad_var_log10"] = mean, math.log10(mean) if mean > 0 else float("nan")
        return out


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
