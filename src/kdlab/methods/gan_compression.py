"""GAN compression by knowledge distillation (Aguinaldo et al. 2019, sec. 3, Fig. 3-4).

A small student generator ``G_s`` (depth scale factor ``model.kwargs.d``) learns from a frozen
teacher generator ``G_t`` (``teacher.checkpoint``, a ``kdlab train-gan`` run) for the SAME latent
batch ``z ~ N(0, I)``, drawn fresh at every step:

* MSE student (Fig. 3, eq. 3): ``L = w_mse * mean (G_s(z) - G_t(z))^2`` (the ``mse`` term of
  ``objective.student``, weight ``objective.student.mse.weight``; no ``gan`` term);
* joint student (Fig. 4, eq. 4): ``L = w_mse * MSE + w_adv * L_adv(D(G_s(z)))``, the ``gan`` term of
  ``objective.student`` (weight w_adv), with a discriminator ``D`` trained on real images vs student samples
  by ``objective.discriminator`` (its ``gan`` term in the same mode, plus ``gradient_penalty`` for WGAN-GP;
  the public reproduction: WGAN-GP, penalty 10, 3 critic steps per student step, Adam 2e-4 betas
  (0.5, 0.999), a = 0.3 i.e. ``mse.weight 0.3, gan.weight 0.7``). D starts from scratch (the
  paper does not say it is the teacher's discriminator; ``players.disc_init`` starts it from a teacher GAN run's).
With the game on, terms may read D's outputs and features (capability ``critic``).

GCC (VEM eqs. 16-18; the unconditional row of the VEM paper, Table 3; SJLeo/GCC models/SAGAN.py): the ``gcc``
term reads the TEACHER's discriminator (capability ``teacher_critic``: ``players.teacher_disc``, a teacher GAN run,
default ``teacher.checkpoint`` when that is a run directory; frozen, never a player, so no step updates it).
``players.disc_gates`` (a threshold) makes the student's D GCC's selective activation discriminator: a learnable
channel gate after each hidden convolution, trained by its own objective ``objective.discriminator_gates``
(the ``selective_activation`` term, GCC's architecture loss; Adam ``players.arch_lr``, GCC's ``optimizer_arch``)
once per step after the student's update, on the step's real batch and a fresh z, with D's weights frozen; the
discriminator's own optimizer never touches the gates.

The two weights are separate keys: 0 turns exactly that term off (unlike ``-(1-a) D + a MSE``). Any
other term whose inputs a generator has (e.g. features of both generators) composes with them.
With the joint loss, each step is one D step and every ``n_critic``-th step one student step; with
MSE only, every step is a student step, real images are not used, and the run can be data-free
(``data.transfer=none data.steps_per_epoch=N``: the batches only carry a batch size).

Model selection: with a validation split, the epoch of lowest MSE to the teacher on fixed latents
(``val/mse_to_teacher``, 1,000 samples); the recipes use ``data.val_size = 0`` (last epoch).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Optional

import torch
from torch import nn

from kdlab.config import ConfigError, bounded
from kdlab.data.batch import Batch
from kdlab.data.transfer import TRANSFER_NONE
from kdlab.games.base import METHODS, unwrap
from kdlab.games.gan_config import GAME_MOVED, GanGameConfig, check_game_config
from kdlab.games.gan_players import (DiscriminatorGame, add_discriminator, build_disc, count_gate_epoch, disc_optim_cfg,
                                       gate_step, load_discriminator, nan_guard, teacher_discriminator)
from kdlab.games.generator_student import GeneratorStudentConfig, GeneratorStudentMethod
from kdlab.models.gan import DISCRIMINATORS
from kdlab.models.gates import GateSet, channel_gates
from kdlab.ranks import rank_rows
from kdlab.terms import TERMS, CriticView


@METHODS.register("gan-compression")
class GANCompression(GeneratorStudentMethod):
    """Student generator distilled from a frozen teacher generator: MSE (Fig. 3) or MSE + adversarial (Fig. 4)."""

    objectives = {"student": "student", "discriminator": "discriminator", "discriminator_gates": "discriminator_gates"}
    default_objective = {"student": {"mse": {"weight": 1.0}},
                         "discriminator": {"gan": {"weight": 1.0, "mode": "vanilla"}}}  # used with a student gan term
    moved = {k: v.replace("<generator or student>", "student") for k, v in GAME_MOVED.items()}

    @dataclass
    class Config(GeneratorStudentConfig, GanGameConfig):
        """``players`` section of ``kdlab compress-gan``: the latents and the discriminator of the joint student."""

        # start D from a GAN run's discriminator (its last.ckpt); null = from scratch (GCC's student D)
        disc_init: Optional[str] = None
        # the teacher GAN run whose discriminator terms read frozen (GCC's D^t, VEM eq. 17); null: teacher.checkpoint
        # when it is a run directory
        teacher_disc: Optional[str] = None
        # GCC's selective activation discriminator: channel gates of this threshold in D (GCC's SAGAN script: 0.1)
        disc_gates: Optional[float] = bounded(None, ge=0, lt=1, optional=True)
        arch_lr: float = bounded(1e-4, gt=0)  # Adam rate of the gates (GCC's arch_lr)

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        lc = cfg.players
        gan = cfg.objective.student.get("gan")
        self.adversarial = gan is not None and float(gan.weight) > 0
        self._disc: Optional[nn.Module] = None
        self.gate_objective = None
        if lc.disc_init and not self.adversarial:
            raise ConfigError(f"players.disc_init = {lc.disc_init!r} starts the discriminator, but objective.student has no "
                              "gan term, so there is none; set objective.student.gan.weight > 0 or players.disc_init=null")
        if self.adversarial and cfg.data.transfer == TRANSFER_NONE:
            raise ConfigError("objective.student.gan trains a discriminator on real images, but data.transfer = 'none' "
                              "(data-free) gives none; set data.transfer=train or drop the gan term")
        super().__init__(cfg, spec, transfer)
        if not len(self.objective):
            raise ConfigError("objective.student has no term with a weight > 0: nothing to train; "
                              "set objective.student.mse.weight and/or objective.student.gan.weight > 0")
        if self.adversarial:
            self.game = DiscriminatorGame(self, self.plain_objective(self._ctx_of("discriminator"), "discriminator"), lc.clip)
            self.gate_objective = add_discriminator(self, self._disc, disc_optim_cfg(cfg), self._ctx_of("discriminator_gates"))
        elif self.build_objective_terms("discriminator_gates"):
            raise ConfigError("objective.discriminator_gates trains the channel gates of the student's discriminator; there "
                              "is none: objective.student has no gan term")
        self._last_student: Dict[str, torch.Tensor] = {}

    def extend_context(self, ctx: Any, student: nn.Module, teacher: nn.Module) -> None:
        """The teacher's discriminator (frozen, capability ``teacher_critic``) when there is one; with the adversarial
        game: build D (from ``players.disc_init`` when set; gated with ``players.disc_gates``) and show it to the
        terms as the critic."""
        lc = self.cfg.players
        self._gates: Optional[GateSet] = None
        run = lc.teacher_disc or (self.cfg.teacher.checkpoint if Path(self.cfg.teacher.checkpoint).is_dir() else None)
        wanted = any("teacher_critic" in TERMS.get(str(name)).requires
                     for player in self.objectives for name in self.build_objective_terms(player))
        if run and (wanted or lc.teacher_disc):
            d_t = teacher_discriminator(self.cfg, self.spec, teacher, run)
            self.add_frozen("teacher_discriminator", d_t)
            ctx.provides = ctx.provides | {"teacher_critic"}
            ctx.teacher_critic = CriticView(lambda: self.frozen["teacher_discriminator"], tuple(teacher.output_shape))
        else:
            ctx.why_not["teacher_critic"] = (f"teacher.checkpoint = {self.cfg.teacher.checkpoint!r} is no GAN run directory; "
                                             "set players.teacher_disc=<the teacher's kdlab train-gan run>")
        if not self.adversarial:
            ctx.why_not["critic"] = "there is no discriminator: objective.student has no gan term"
            if lc.disc_gates is not None:
                raise ConfigError(f"players.disc_gates = {lc.disc_gates} gates the student's discriminator, but objective.student "
                                  "has no gan term, so there is none; set objective.student.gan.weight > 0 or players.disc_gates=null")
            return
        disc_name = check_game_config(lc, self.cfg.model.name, self.cfg.objective, "student")
        gated = {} if lc.disc_gates is None else {"gate_threshold": float(lc.disc_gates)}
        if gated and "gate_threshold" not in inspect.signature(DISCRIMINATORS.get(disc_name)).parameters:
            raise ConfigError(f"players.disc_gates: discriminator {disc_name!r} has no channel gates; accepted: players.disc=sagan")
        self._disc = build_disc(self.cfg, self.spec, disc_name, student, **gated)
        if lc.disc_init:
            load_discriminator(self._disc, lc.disc_init)
        if gated:
            self._gates = GateSet(channel_gates(self._disc))
        ctx.provides = ctx.provides | {"critic"}
        ctx.critic = CriticView(lambda: unwrap(self.players["discriminator"]) if "discriminator" in self.players
                                else self._disc, tuple(student.output_shape),
                                trained=lambda: self.players["discriminator"])
        given = frozenset({"critic"} | ({"teacher_critic"} & ctx.provides))
        game = SimpleNamespace(epochs=int(self.cfg.trainer.epochs), gates=self._gates)
        self._ctx_of = lambda role: replace(ctx, role=role, provides=given, game=game)

    def build_objective_terms(self, player: str) -> Dict[str, Any]:
        """The configured terms of ``objective.<player>`` with a weight > 0 (names only; nothing built)."""
        return {k: v for k, v in (self.cfg.objective.get(player) or {}).items() if float(v.weight) > 0}

    @property
    def synthesizes(self) -> bool:  # type: ignore[override]
        return not self.adversarial

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        if not self.adversarial:
            return super().training_step(batch, step)
        real = self.range.to_tanh(batch.x)
        with torch.no_grad():
            fake = self.players["student"](self.student_inputs(batch)).out
        out = self.game.step(real, fake)
        if (step + 1) % self.cfg.players.n_critic == 0 or not self._last_student:
            self._last_student = self.distill_step(self.student_inputs(batch), batch)
            if self.gate_objective is not None:
                self._last_student.update(self.gate_step(real))
        out.update(self._last_student)
        out["loss"] = nan_guard(fake, out["loss_g"] + out["loss_d"])
        return out

    def gate_step(self, real: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One update of the gates (:func:`kdlab.games.gan_players.gate_step`) on the student's and the teacher's
        images of a fresh z and the step's ``real`` images (GCC: a validation batch)."""
        z = rank_rows(lambda n: torch.randn(n, self.latent_dim, device=real.device), real.shape[0])
        with torch.no_grad():
            s_img, t_img = self.players["student"](z).out, self.frozen["teacher"](z)
        return gate_step(self, s_img, t_img, Batch(target=real, size=real.shape[0]))

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        count_gate_epoch(self, epoch)
