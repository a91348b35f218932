"""KDGAN: three-player distillation (Wang et al., NeurIPS 2018, appendix A-C).

Players (all trained): the classifier c (the student, ``cfg.model``, exported as ``student``), the
teacher t (pre-trained by the ``teacher`` method, loaded from ``teacher.checkpoint`` and fine-tuned
in the game) and the discriminator d (``players.disc_model``, a LeNet by default as in the published
code), which scores a pair (x, y) by ``p_d(x, y) = sigmoid(l_d(x)_y)``.

One game step on a batch (x, y[, x_priv]) (appendix B; terms in :mod:`kdlab.losses.kdgan`):

* d ascends ``(1/k) sum_i [log p_d(x, y) + alpha log(1 - p_d(x, z^c_i)) + (1-alpha) log(1 - p_d(x, z^t_i))]``
  with pseudo labels ``z = argmax`` of concrete samples of ``q_c``, ``q_t`` (temperature tau);
* t descends ``(1-alpha) * A_t + gamma * L_DS^t(p_t, p_c)``;
* c descends ``alpha * A_c + beta * L_DS^c(p_c, p_t)``;

where ``A`` is the adversarial term ``E_{y~p}[log(1 - p_d(x, y))]`` whose gradient is estimated by
``players.estimator``: ``paper`` (default: REINFORCE with the control variate ``players.baseline``),
``code`` (the released code: the reward ``p_d(x, z)`` as a soft BCE target, no control variate) or
``exact`` (the exact gradient of ``sum_y p(y|x) log(1 - p_d(x,y))``, possible because d scores
every label in one pass; a zero-variance reference). ``players.sampler: categorical`` draws the pseudo
labels from p_c, p_t directly (no Gumbel trick; Fig. 7).

Schedule (``players.schedule = [n_d, n_t, n_c]``): with ``schedule_unit: step`` every batch gets n_d
d-updates, then n_t t-updates, then n_c c-updates (fresh samples each); with ``schedule_unit:
epoch`` the run cycles through n_d epochs of d, n_t of t and n_c of c (the published code:
20, 10, 10). Gumbel temperature ``tau = max(tau_min, tau_start * tau_decay ** (epoch // tau_every))``
(published code: 10, x0.88, no floor).

Choices where the paper is silent (each a config key): the teacher's learning rate is
``teacher_lr = 1e-5``. The published 5e-4 for every player wrecks a pre-trained LeNet teacher on
Fashion-MNIST (n = 500: 72.8% -> 43% test accuracy within 16 steps, ~10-45% thereafter, with any
estimator, the exact gradient included). Not because of d's start: d only learns the labels the players
sample, and once they are mostly right Lemma 4.1 drives d's score of the true label to
~1 / (1 + p_alpha(y|x)) ~ 0.5, while the labels nobody samples keep whatever score d's generalisation
gives them; d then ranks a wrong label above the true one on 45-90% of the training images, and the
teacher's adversarial gradient (gamma = 1e-4 leaves almost no distillation anchor) follows that ranking.
A small rate only slows the drift (3e-5: n = 20K lost 24 points in its first teacher epoch). What holds
the teacher at the published rate is an anchor to the labels, ``teacher_ce`` (CE(p_t, y), not in the
paper; the ``kdgan-*`` experiments use 1.0 with teacher_lr 5e-4): ``kdlab reproduce kdgan-teacher-collapse``.
The published code pre-trains d with
cross entropy (``disc_init: <run>``; ``teacher`` gives the same kind of network without a second run,
``scratch`` a random one). The REINFORCE score is ``log p(z|x)`` at the discretised label (``score:
concrete`` uses the concrete density of the continuous sample, the appendix's literal ``log
q_c(y^c_i|x)``, the only choice under which the Gumbel temperature changes the estimator); the
classifier gets no cross entropy (as in U); the published code pre-trains it with CE
(``model.checkpoint=<CE run>``).

Extra student terms: ``objective.student`` (default none; e.g. ``ce``) are added to the classifier's loss,
with the game's teacher as their teacher (``c_<term>`` in the logs).

Privileged inputs: when batches carry ``x_teacher`` (``data.privileged``), the teacher sees it and
the classifier and discriminator see ``x``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from kdlab.config import bounded, choice, temperature_field
from kdlab.data.batch import Batch
from kdlab.engine import file_sha256, load_network, optim_with_lr
from kdlab.losses import cross_entropy
from kdlab.losses import kdgan as K
from kdlab.methods.base import METHODS, Method, build_network, unwrap
from kdlab.metrics import evaluate_accuracy
from kdlab.models import build_model

ESTIMATORS = ("paper", "code", "exact")
SAMPLERS = ("gumbel", "categorical")
UNITS = ("step", "epoch")
DISC_INITS = ("teacher", "scratch")


@METHODS.register("kdgan")
class KDGAN(Method):
    """KDGAN (Wang et al. 2018): classifier, fine-tuned teacher and discriminator in a minimax game."""

    export_name = "student"

    @dataclass
    class Config:
        """``players`` section of a KDGAN run (defaults: the published run script, see NOTES)."""

        alpha: float = bounded(0.2, ge=0, le=1)  # weight of the classifier's pseudo labels in the mixture p_alpha
        beta: float = bounded(2.0, ge=0)  # weight of L_DS^c (classifier learns from the teacher)
        gamma: float = bounded(1e-4, ge=0)  # weight of L_DS^t (teacher learns from the classifier)
        distill: str = choice("l2", K.DISTILL_MODES)  # l2 (on log-probabilities, appendix B) | kl
        temperature: float = temperature_field(1.0)  # for distill: kl
        k: int = bounded(5, ge=1)  # pseudo-label samples per input and player
        estimator: str = choice("paper", ESTIMATORS)
        baseline: str = choice("exact", K.BASELINES)  # control variate of estimator paper
        score: str = choice("discrete", K.SCORES)  # paper estimator's score: discrete (log p(z)) | concrete (log q(y))
        sampler: str = choice("gumbel", SAMPLERS)  # categorical: no Gumbel trick (Fig. 7)
        tau_start: float = temperature_field(10.0)  # Gumbel temperature tau
        tau_decay: float = bounded(0.88, gt=0, le=1)
        tau_every: int = bounded(1, ge=1)  # epochs per decay
        tau_min: float = temperature_field(0.1)
        schedule: List[int] = field(default_factory=lambda: [1, 1, 1])  # [d, t, c] updates (or epochs)
        schedule_unit: str = choice("step", UNITS)
        teacher_ce: float = bounded(0.0, ge=0)  # optional CE(p_t, y) for the teacher (not in the paper; 0 = off)
        disc_model: str = "lenet"
        disc_kwargs: Dict[str, Any] = field(default_factory=dict)
        teacher_lr: Optional[float] = bounded(1e-5, gt=0, optional=True)  # None: optim.lr. Published code: 5e-4
        # for all players, which wrecked the pre-trained teacher within ~15 steps here (Fashion-MNIST, 78% -> 10%)
        disc_lr: Optional[float] = bounded(None, gt=0, optional=True)  # None: optim.lr
        # start d from the pre-trained teacher's weights | scratch | a run (or weights) of a classifier of d's
        # architecture pre-trained with CE (the published code pre-trains d so)
        disc_init: str = "teacher"

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        lc = cfg.players
        if lc.baseline == "loo" and lc.k < 2:
            raise ValueError(f"players.baseline = 'loo' needs players.k >= 2, got k = {lc.k}")
        if lc.score == "concrete" and lc.sampler != "gumbel":
            raise ValueError("players.score = 'concrete' scores the Gumbel-softmax sample: it needs players.sampler = 'gumbel'")
        sched = list(lc.schedule)
        if len(sched) != 3 or any(int(s) < 0 for s in sched) or sum(sched) == 0:
            raise ValueError(f"players.schedule = {sched}: give [n_d, n_t, n_c], integers >= 0, not all 0")
        self.schedule = [int(s) for s in sched]

        teacher, self.teacher_path = load_network(cfg.teacher.checkpoint, spec, hint="teacher.checkpoint=runs/<teacher run>")
        classifier = build_network(cfg, spec)
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
        self.teacher_init = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
        self.objective = self.add_student("classifier", classifier, self.build_objective(self.term_context(classifier, teacher)))
        self.add_player("teacher", teacher, optim_with_lr(cfg.optim, lc.teacher_lr, "players.teacher_lr"))
        self.add_player("discriminator", disc, optim_with_lr(cfg.optim, lc.disc_lr, "players.disc_lr"))
        self.epoch = 0
        self.best_val: Optional[float] = None
        self.teacher_at_best: Optional[Dict[str, torch.Tensor]] = None

    # -- schedule ----------------------------------------------------------------------------
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

    # -- the game ----------------------------------------------------------------------------
    def _sample(self, logits: torch.Tensor):
        lc = self.cfg.players
        if lc.sampler == "categorical":
            return None, K.sample_labels(logits, lc.k)
        return K.gumbel_softmax_sample(logits, self.tau, lc.k)

    def adversarial_term(self, logits: torch.Tensor, d_logits: torch.Tensor) -> torch.Tensor:
        """The surrogate whose gradient estimates ``grad E_{y~p}[log(1 - p_d(x,y))]`` (``players.estimator``)."""
        lc = self.cfg.players
        if lc.estimator == "exact":
            return K.expected_reward(logits, d_logits).mean()
        log_y, z = self._sample(logits)
        if lc.estimator == "code":
            return K.code_surrogate(logits, z, d_logits)
        score = K.concrete_log_density(logits, log_y, self.tau) if lc.score == "concrete" else None
        rewards = K.adversarial_rewards(d_logits, z)
        return K.reinforce_surrogate(logits, z, rewards, lc.baseline, d_logits=d_logits, score_logp=score)

    def distill_term(self, learner: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        lc = self.cfg.players
        return K.kdgan_distill_loss(learner, target, lc.distill, lc.temperature)

    def d_step(self, x, y, xt) -> torch.Tensor:
        lc = self.cfg.players
        c, t, d = self.players["classifier"], self.players["teacher"], self.players["discriminator"]
        with torch.no_grad():
            z_c = self._sample(c(x).out)[1]
            z_t = self._sample(t(xt))[1]
        obj = K.discriminator_objective(d(x), y, z_c, z_t, lc.alpha)
        self.step_optimizer("discriminator", -obj)
        return obj.detach()

    def player_losses(self, who: str, batch: Batch) -> Dict[str, torch.Tensor]:
        """Loss terms of the classifier (``who='c'``) or the teacher (``'t'``), gradients to that player only."""
        lc = self.cfg.players
        x, y, xt = batch.x, batch.y, batch.teacher_input
        c, t, d = self.players["classifier"], self.players["teacher"], self.players["discriminator"]
        with torch.no_grad():
            d_logits = d(x)
        if who == "c":
            t_out = self.objective.teacher_outputs(t, xt, batch)
            if t_out is None:
                with torch.no_grad():
                    other = t(xt)
            else:
                other = t_out.out.detach()
            s_out = c(x)
            own = s_out.out
            terms = {"c_adv": lc.alpha * self.adversarial_term(own, d_logits),
                     "c_ds": lc.beta * self.distill_term(own, other)}
            terms.update({f"c_{k}": v for k, v in self.student_terms("classifier", s_out, t_out, batch).items()
                          if k != "loss"})
            self._c_outputs = (s_out, t_out)  # for the terms' own updates after the classifier's step
        else:
            with torch.no_grad():
                other = c(x).out
            own = t(xt)
            terms = {"t_adv": (1.0 - lc.alpha) * self.adversarial_term(own, d_logits),
                     "t_ds": lc.gamma * self.distill_term(own, other)}
            if lc.teacher_ce > 0:
                terms["t_ce"] = lc.teacher_ce * cross_entropy(own, y)
        return terms

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        x, y, xt = batch.x, batch.y, batch.teacher_input
        counts = self.phase_counts()
        out: Dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=x.device)
        for _ in range(counts["d"]):
            out["d_value"] = self.d_step(x, y, xt)
            total = total + out["d_value"]
        for who, name in (("t", "teacher"), ("c", "classifier")):
            for _ in range(counts[who]):
                terms = self.player_losses(who, batch)
                loss = sum(terms.values())
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
        """``val/acc`` (the classifier, selects the checkpoint) and ``val/teacher_acc``; keeps a copy of
        the teacher at the classifier's best epoch (reported beside it, as Table 3's parentheses)."""
        acc = evaluate_accuracy(self.eval_model(), loader, device=device)
        t_acc = evaluate_accuracy(self.teacher_model(), loader, device=device, view="teacher")
        if self.best_val is None or acc > self.best_val:
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
        from kdlab.methods.evaluation import classifier_finalize

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
        lc = self.cfg.players
        out["kdgan"] = {"estimator": lc.estimator, "baseline": lc.baseline, "sampler": lc.sampler,
                        "score": lc.score, "alpha": lc.alpha, "beta": lc.beta, "gamma": lc.gamma,
                        "distill": lc.distill, "k": lc.k, "schedule": self.schedule,
                        "schedule_unit": lc.schedule_unit, "tau_final": self.tau}
        return out
