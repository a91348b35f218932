"""KDGAN: three-player distillation (Wang et al., NeurIPS 2018, appendix A-C).

Players (all trained): the classifier c (the student, ``cfg.model``, exported as ``student``), the
teacher t (pre-trained by the ``teacher`` method, loaded from ``teacher.checkpoint`` and fine-tuned
in the game) and the discriminator d (``players.disc_model``, a LeNet by default as in the published
code), which scores a pair (x, y) by ``p_d(x, y) = sigmoid(l_d(x)_y)``.

One game step on a batch (x, y[, x_priv]) (appendix B; each player's loss is its objective of terms,
the losses themselves in :mod:`kdlab.losses.kdgan`):

* d descends ``objective.discriminator`` (default ``kdgan_discriminator``): it ascends
  ``(1/k) sum_i [log p_d(x, y) + alpha log(1 - p_d(x, z^c_i)) + (1-alpha) log(1 - p_d(x, z^t_i))]``
  with pseudo labels ``z = argmax`` of concrete samples of ``q_c``, ``q_t`` (temperature tau);
* t descends ``objective.teacher`` (default ``kdgan_adversarial`` = ``(1-alpha) A_t`` and ``kdgan_distill``
  with weight gamma = 1e-4: ``gamma L_DS^t(p_t, p_c)``);
* c descends ``objective.student`` (default ``kdgan_adversarial`` = ``alpha A_c`` and ``kdgan_distill`` with
  weight beta = 2: ``beta L_DS^c(p_c, p_t)``), plus any student term (e.g. ``ce``; ``c_<term>`` in the logs);

where ``A`` is the adversarial term ``E_{y~p}[log(1 - p_d(x, y))]`` whose gradient the term's ``estimator``
estimates: ``paper`` (default: REINFORCE with the control variate ``baseline``), ``code`` (the released code:
the reward ``p_d(x, z)`` as a soft BCE target, no control variate) or ``exact`` (the exact gradient of
``sum_y p(y|x) log(1 - p_d(x,y))``, possible because d scores every label in one pass; a zero-variance
reference). The game's settings are ``players``: ``alpha`` (the mixture, shared by the three objectives), ``k``,
``sampler`` (``categorical`` draws the pseudo labels from p_c, p_t directly, no Gumbel trick; Fig. 7) and the
Gumbel temperature schedule.

Schedule (``players.schedule = [n_d, n_t, n_c]``): with ``schedule_unit: step`` every batch gets n_d
d-updates, then n_t t-updates, then n_c c-updates (fresh samples each); with ``schedule_unit:
epoch`` the run cycles through n_d epochs of d, n_t of t and n_c of c (the published code:
20, 10, 10). Gumbel temperature ``tau = max(tau_min, tau_start * tau_decay ** (epoch // tau_every))``
(published code: 10, x0.88, no floor).

Choices where the paper is silent (each a config key): the teacher's learning rate ``teacher_lr`` defaults to
``optim.lr`` (null), as the published code trains every player with one Adam 5e-4. At that rate the pre-trained
teacher collapses on Fashion-MNIST (n = 500: 72.8% -> 43% test accuracy within 16 steps, with any estimator,
the exact gradient included): once the players are mostly right Lemma 4.1 drives d's score of the true label to
~1 / (1 + p_alpha(y|x)) ~ 0.5, while the labels nobody samples keep whatever score d's generalisation gives
them; d then ranks a wrong label above the true one on 45-90% of the training images, and the teacher's
adversarial gradient (gamma = 1e-4 leaves almost no distillation anchor) follows that ranking. A small rate
only slows the drift (3e-5: n = 20K lost 24 points in its first teacher epoch; the former default 1e-5 is a
``teacher_lr`` setting). What holds the teacher at the published rate is an anchor to the labels, the teacher's
``ce`` term (CE(p_t, y)): NOT in the paper, so off by default and in the recipe; the ``kdgan-*`` experiments
report it as a labelled diagnostic row (``kdlab reproduce kdgan-teacher-collapse``).
The published code pre-trains d with
cross entropy (``disc_init: <run>``; ``teacher`` gives the same kind of network without a second run,
``scratch`` a random one). The REINFORCE score is ``log p(z|x)`` at the discretised label (``score:
concrete`` uses the concrete density of the continuous sample, the appendix's literal ``log
q_c(y^c_i|x)``, the only choice under which the Gumbel temperature changes the estimator); the
classifier gets no cross entropy (as in U); the published code pre-trains it with CE
(``model.checkpoint=<CE run>``). The REINFORCE score and estimator are keys of each player's
``kdgan_adversarial`` term.

Checkpoint selection: the classifier is validated after every epoch, but only the epochs in which it was
updated are candidates (:meth:`KDGAN.selectable`), so with ``schedule_unit: epoch`` its untouched start (the d
and t epochs before its first c-epoch) is never selected: the same rule over the same kind of candidates (its
own training epochs) as every other method.

Synthetic transfer images (``data.transfer: synth``): the game's teacher is also the synthesizer's; d's true
labels of a synthetic image are the current teacher's argmax (a choice: such images have no labels).

Privileged inputs: when batches carry ``x_teacher`` (``data.privileged``), the teacher sees it and
the classifier and discriminator see ``x``.
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from kdlab.config import bounded, choice, temperature_field
from kdlab.data.batch import Batch
from kdlab.engine import file_sha256, load_network, optim_with_lr
from kdlab.losses import kdgan as K
from kdlab.games.base import METHODS, Method, unwrap
from kdlab.games.networks import build_network
from kdlab.metrics import evaluate_accuracy
from kdlab.models import build_model
from kdlab.terms import CriticView, Outputs

SAMPLERS = ("gumbel", "categorical")
UNITS = ("step", "epoch")
DISC_INITS = ("teacher", "scratch")


@METHODS.register("kdgan")
class KDGAN(Method):
    """KDGAN (Wang et al. 2018): classifier, fine-tuned teacher and discriminator in a minimax game.

    Raises (at construction): ConfigError / ValueError for a bad schedule, a discriminator that does not fit
    its initialisation, a teacher whose label space differs, objectives without a term, or teacher and
    discriminator terms with trainable parts of their own (only the classifier's terms may have them).
    """

    export_name = "student"
    objectives = {"student": "student", "teacher": "teacher", "discriminator": "discriminator"}
    default_objective = {
        "student": {"kdgan_adversarial": {"weight": 1.0}, "kdgan_distill": {"weight": 2.0}},  # alpha A_c + beta L_DS^c
        "teacher": {"kdgan_adversarial": {"weight": 1.0}, "kdgan_distill": {"weight": 1e-4}},  # (1-alpha) A_t + gamma L_DS^t
        "discriminator": {"kdgan_discriminator": {"weight": 1.0}},
    }
    moved = {"beta": "objective.student.kdgan_distill.weight", "gamma": "objective.teacher.kdgan_distill.weight",
             "distill": "objective.student.kdgan_distill.mode and objective.teacher.kdgan_distill.mode",
             "temperature": "objective.student.kdgan_distill.temperature and objective.teacher.kdgan_distill.temperature",
             "estimator": "objective.student.kdgan_adversarial.estimator and objective.teacher.kdgan_adversarial.estimator",
             "baseline": "objective.student.kdgan_adversarial.baseline and objective.teacher.kdgan_adversarial.baseline",
             "score": "objective.student.kdgan_adversarial.score and objective.teacher.kdgan_adversarial.score",
             "teacher_ce": "objective.teacher.ce.weight"}
    synth_unsupported = None

    @dataclass
    class Config:
        """``players`` section of a KDGAN run: the game's settings and the teacher's and discriminator's networks
        and optimizers (defaults: the published run script, see NOTES, except the schedule: one d/t/c update per
        batch, a default for any run length; recipe ``kdgan`` has the published 20/10/10 epochs and pre-trained players)."""

        alpha: float = bounded(0.2, ge=0, le=1)  # weight of the classifier's pseudo labels in the mixture p_alpha
        k: int = bounded(5, ge=1)  # pseudo-label samples per input and player
        sampler: str = choice("gumbel", SAMPLERS)  # categorical: no Gumbel trick (Fig. 7)
        tau_start: float = temperature_field(10.0)  # Gumbel temperature tau
        tau_decay: float = bounded(0.88, gt=0, le=1)
        tau_every: int = bounded(1, ge=1)  # epochs per decay
        tau_min: float = temperature_field(0.1)
        schedule: List[int] = field(default_factory=lambda: [1, 1, 1])  # [d, t, c] updates (or epochs)
        schedule_unit: str = choice("step", UNITS)
        disc_model: str = "lenet"
        disc_kwargs: Dict[str, Any] = field(default_factory=dict)
        teacher_lr: Optional[float] = bounded(None, gt=0, optional=True)  # None: optim.lr (published: 5e-4 for all
        # players, at which the teacher collapses without the ce anchor, see the module docstring)
        disc_lr: Optional[float] = bounded(None, gt=0, optional=True)  # None: optim.lr
        # start d from the pre-trained teacher's weights | scratch | a run (or weights) of a classifier of d's
        # architecture pre-trained with CE (the published code pre-trains d so)
        disc_init: str = "teacher"

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        lc = cfg.players
        sched = list(lc.schedule)
        if len(sched) != 3 or any(int(s) < 0 for s in sched) or sum(sched) == 0:
            raise ValueError(f"players.schedule = {sched}: give [n_d, n_t, n_c], integers >= 0, not all 0")
        self.schedule = [int(s) for s in sched]
        self.alpha, self.k, self.sampler = float(lc.alpha), int(lc.k), str(lc.sampler)
        self.epoch = 0

        teacher, self.teacher_path = load_network(cfg.teacher.checkpoint, spec, hint="teacher.checkpoint=runs/<teacher run>")
        classifier = build_network(cfg, spec)
        disc = self._build_disc(lc, spec, teacher)
        self.teacher_init = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
        image = (spec.in_channels, spec.image_size, spec.image_size)
        critic = CriticView(lambda: unwrap(self.players["discriminator"]), image)

        def ctx(student: nn.Module, other: nn.Module, role: str):
            c = self.term_context(student, other)
            c.provides, c.critic, c.game, c.role = c.provides | {"critic"}, critic, self, role
            return c

        self.objective = self.add_student("classifier", classifier, self.build_objective(ctx(classifier, teacher, "student")))
        self.t_objective = self.plain_objective(ctx(teacher, classifier, "teacher"), "teacher")
        d_ctx = ctx(disc, None, "discriminator")
        d_ctx.provides = d_ctx.provides | {"labels"}  # synthetic batches: the teacher's argmax labels (training_step)
        self.d_objective = self.plain_objective(d_ctx, "discriminator")
        self.add_player("teacher", teacher, optim_with_lr(cfg.optim, lc.teacher_lr, "players.teacher_lr"))
        self.add_player("discriminator", disc, optim_with_lr(cfg.optim, lc.disc_lr, "players.disc_lr"))
        self.build_synthesizer(teacher, lambda: unwrap(self.players["classifier"]).net)
        self.best_val: Optional[float] = None
        self.teacher_at_best: Optional[Dict[str, torch.Tensor]] = None

    def _build_disc(self, lc: Any, spec: Any, teacher: nn.Module) -> nn.Module:
        disc = build_model(lc.disc_model, num_classes=spec.num_classes, in_channels=spec.in_channels,
                           image_size=spec.image_size, **dict(lc.disc_kwargs))
        if lc.disc_init not in DISC_INITS:
            init, _ = load_network(lc.disc_init, spec, what="discriminator initialisation", hint="players.disc_init")
            try:
                disc.load_state_dict(init.state_dict())
            except RuntimeError as exc:
                raise ValueError(f"players.disc_init = {lc.disc_init!r} holds {init.arch} {init.arch_kwargs}, not the "
                                 f"discriminator's {lc.disc_model} {dict(lc.disc_kwargs)}") from exc
        elif lc.disc_init == "teacher":
            try:
                disc.load_state_dict(teacher.state_dict())
            except RuntimeError as exc:
                raise ValueError(
                    f"players.disc_init = 'teacher' needs a discriminator of the teacher's architecture "
                    f"({teacher.arch} {teacher.arch_kwargs}); got {lc.disc_model} {dict(lc.disc_kwargs)}: "
                    "set players.disc_model/disc_kwargs to match or players.disc_init=scratch"
                ) from exc
        return disc

    # -- schedule (the game state terms read: ctx.game) ----------------------------------------------
    @property
    def tau(self) -> float:
        lc = self.cfg.players
        return max(lc.tau_min, lc.tau_start * lc.tau_decay ** (self.epoch // lc.tau_every))

    def phase_counts(self) -> Dict[str, int]:
        """Updates of (d, t, c) in the current step."""
        n_d, n_t, n_c = self.schedule
        if self.cfg.players.schedule_unit == "step":
            return {"d": n_d, "t": n_t, "c": n_c}
        pos = self.epoch % (n_d + n_t + n_c)
        player = "d" if pos < n_d else ("t" if pos < n_d + n_t else "c")
        return {p: int(p == player) for p in ("d", "t", "c")}

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        self.epoch = epoch + 1

    def selectable(self, epoch: int) -> bool:
        """Only epochs in which the classifier was updated are checkpoint candidates (``schedule_unit: epoch``:
        its c-epochs), so KDGAN selects over its classifier's own training epochs as every other row does:
        its untouched start (the d and t epochs before the first c-epoch) is never a candidate."""
        n_d, n_t, n_c = self.schedule
        if self.cfg.players.schedule_unit == "step":
            return n_c > 0
        return epoch % (n_d + n_t + n_c) >= n_d + n_t

    def sample(self, logits: torch.Tensor):
        """``(log y or None, z [k, B])``: k pseudo labels per row of ``logits`` (Gumbel-softmax at ``tau``, or
        categorical samples with ``players.sampler: categorical``)."""
        if self.sampler == "categorical":
            return None, K.sample_labels(logits, self.k)
        return K.gumbel_softmax_sample(logits, self.tau, self.k)

    # -- the game ----------------------------------------------------------------------------
    def d_step(self, batch: Batch) -> torch.Tensor:
        """One discriminator update on ``objective.discriminator``; returns d's value (the objective it ascends)."""
        x, xt = batch.x, batch.teacher_input
        c, t, d = self.players["classifier"], self.players["teacher"], self.players["discriminator"]
        with torch.no_grad():
            z_c = self.sample(c(x).out)[1]
            z_t = self.sample(t(xt))[1]
        loss = self.d_objective(Outputs(out=d(x), derived={"z_c": z_c, "z_t": z_t}, x=x), None, batch)["loss"]
        self.step_optimizer("discriminator", loss)
        return -loss.detach()

    def player_losses(self, who: str, batch: Batch) -> Dict[str, torch.Tensor]:
        """Weighted terms of the classifier (``who='c'``, ``c_*``) or the teacher (``'t'``, ``t_*``), gradients to that
        player only (the other player's outputs are detached by every term)."""
        x, xt = batch.x, batch.teacher_input
        c, t = self.players["classifier"], self.players["teacher"]
        if who == "c":
            t_out = self.objective.teacher_outputs(t, xt, batch)
            s_out = c(x)
            self._c_outputs = (s_out, t_out)  # for the terms' own updates after the classifier's step
            terms = self.student_terms("classifier", s_out, t_out, batch)
        else:
            with torch.no_grad():
                other = Outputs(out=c(x).out, x=x)
            terms = self.t_objective(Outputs(out=t(xt), x=xt), other, batch)
        return {f"{who}_{k}": v for k, v in terms.items() if k != "loss"}

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        if batch.y is None:  # synthetic images: d's true labels are the (current) teacher's
            with torch.no_grad():
                batch = Batch(x=batch.x, y=self.players["teacher"](batch.teacher_input).argmax(1))
        x = batch.x
        counts = self.phase_counts()
        out: Dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=x.device)
        for _ in range(counts["d"]):
            out["d_value"] = self.d_step(batch)
            total = total + out["d_value"]
        for who, name in (("t", "teacher"), ("c", "classifier")):
            for _ in range(counts[who]):
                terms = self.player_losses(who, batch)
                loss = functools.reduce(operator.add, terms.values())
                self.step_optimizer(name, loss)
                out.update({k: v.detach() for k, v in terms.items()})
                if who == "c":
                    s_out, t_out = self._c_outputs
                    out.update({f"c_{k}": v for k, v in self.update_terms("classifier", s_out, t_out, batch).items()})
                total = total + loss.detach()
        out["tau"] = torch.tensor(self.tau)
        out["loss"] = total  # the sum of every objective computed in this step (NaN check)
        return out

    # -- evaluation and selection ------------------------------------------------------------
    def eval_model(self) -> nn.Module:
        return unwrap(self.players["classifier"]).net

    def teacher_model(self) -> nn.Module:
        return unwrap(self.players["teacher"])

    def validate(self, loader: Any, device: Any) -> Dict[str, float]:
        """``val/acc`` (the classifier, selects the checkpoint on :meth:`selectable` epochs) and ``val/teacher_acc``;
        keeps a copy of the teacher at the classifier's best epoch (reported beside it, as Table 3's parentheses)."""
        acc = evaluate_accuracy(self.eval_model(), loader, device=device)
        t_acc = evaluate_accuracy(self.teacher_model(), loader, device=device, view="teacher")
        if self.selectable(self.epoch - 1) and (self.best_val is None or acc > self.best_val):
            self.best_val = acc
            self.teacher_at_best = {k: v.detach().cpu().clone() for k, v in self.teacher_model().state_dict().items()}
        return {"val/acc": acc, "val/teacher_acc": t_acc}

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["kdgan"] = {"epoch": self.epoch, "best_val": self.best_val, "teacher_at_best": self.teacher_at_best}
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        extra = state.get("kdgan", {})
        self.epoch = int(extra.get("epoch", 0))
        self.best_val = extra.get("best_val")
        self.teacher_at_best = extra.get("teacher_at_best")

    def finalize(self, run_dir: Any, data: Any, result: Any, device: Any) -> Dict[str, Any]:
        """The classifier's summary (:func:`classifier_finalize`) plus the teacher's test accuracy:
        pre-trained (``test_acc``, as other methods report it), at the classifier's best epoch and last."""
        import copy

        from kdlab.data import make_loader
        from kdlab.games.evaluation import classifier_finalize

        out = classifier_finalize(self, run_dir, data, result, device)
        loader = make_loader(data.test, self.cfg.data.eval_batch_size, shuffle=False, seed=self.cfg.seed)
        teacher = self.teacher_model()

        def acc_with(state):
            if state is None:
                return None
            m = copy.deepcopy(teacher)
            m.load_state_dict(state)
            return evaluate_accuracy(m.to(device), loader, device=device, view="teacher")

        out["teacher"] = {
            "name": teacher.arch,
            "checkpoint": self.teacher_path,
            "sha256": file_sha256(self.teacher_path),
            "params": sum(p.numel() for p in teacher.parameters()),
            "test_acc": acc_with(self.teacher_init),
            "test_acc_at_best": acc_with(self.teacher_at_best),
            "test_acc_last": evaluate_accuracy(teacher, loader, device=device, view="teacher"),
        }
        from omegaconf import OmegaConf

        lc = self.cfg.players
        out["kdgan"] = {"alpha": lc.alpha, "sampler": lc.sampler, "k": lc.k, "schedule": self.schedule,
                        "schedule_unit": lc.schedule_unit, "tau_final": self.tau,
                        "objective": {p: OmegaConf.to_container(self.cfg.objective[p]) for p in self.objectives}}
        return out
