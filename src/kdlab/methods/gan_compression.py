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
With the game on, terms may read D's features (capability ``critic``): GCC's ``gcc`` term (VEM eq. 17) on
SAGAN, the unconditional row of the VEM paper (Table 3).

The two weights are separate keys: 0 turns exactly that term off (unlike ``-(1-a) D + a MSE``). Any
other term whose inputs a generator has (e.g. features of both generators) composes with them.
With the joint loss, each step is one D step and every ``n_critic``-th step one student step; with
MSE only, every step is a student step, real images are not used, and the run can be data-free
(``data.transfer=none data.steps_per_epoch=N``: the batches only carry a batch size).

Model selection: with a validation split, the epoch of lowest MSE to the teacher on fixed latents
(``val/mse_to_teacher``, 1,000 samples); the recipes use ``data.val_size = 0`` (last epoch).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Optional

import torch
from torch import nn

from kdlab.config import ConfigError
from kdlab.data.batch import Batch
from kdlab.data.transfer import TRANSFER_NONE
from kdlab.methods.base import METHODS, unwrap
from kdlab.methods.gan_config import GAME_MOVED, GanGameConfig, check_game_config
from kdlab.methods.gan_players import (DiscriminatorGame, build_disc, disc_optim_cfg,
                                       load_discriminator, nan_guard)
from kdlab.methods.generator_student import GeneratorStudentConfig, GeneratorStudentMethod
from kdlab.terms import CriticView


@METHODS.register("gan-compression")
class GANCompression(GeneratorStudentMethod):
    """Student generator distilled from a frozen teacher generator: MSE (Fig. 3) or MSE + adversarial (Fig. 4)."""

    objectives = {"student": "student", "discriminator": "discriminator"}
    default_objective = {"student": {"mse": {"weight": 1.0}},
                         "discriminator": {"gan": {"weight": 1.0, "mode": "vanilla"}}}  # used with a student gan term
    moved = {k: v.replace("<generator or student>", "student") for k, v in GAME_MOVED.items()}

    @dataclass
    class Config(GeneratorStudentConfig, GanGameConfig):
        """``players`` section of ``kdlab compress-gan``: the latents and the discriminator of the joint student."""

        # start D from a teacher GAN run's discriminator (its last.ckpt): GCC's D^t (VEM eq. 17); null = from scratch
        disc_init: Optional[str] = None

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        lc = cfg.players
        gan = cfg.objective.student.get("gan")
        self.adversarial = gan is not None and float(gan.weight) > 0
        self._disc: Optional[nn.Module] = None
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
            self.add_player("discriminator", self._disc, disc_optim_cfg(cfg))
        self._last_student: Dict[str, torch.Tensor] = {}

    def extend_context(self, ctx: Any, student: nn.Module, teacher: nn.Module) -> None:
        """With the adversarial game: build D (from ``players.disc_init`` when set) and show it to the terms as
        the critic (GCC reads its features, VEM eq. 17)."""
        if not self.adversarial:
            ctx.why_not["critic"] = "there is no discriminator: objective.student has no gan term"
            return
        disc_name = check_game_config(self.cfg.players, self.cfg.model.name, self.cfg.objective, "student")
        self._disc = build_disc(self.cfg, self.spec, disc_name, student)
        if self.cfg.players.disc_init:
            load_discriminator(self._disc, self.cfg.players.disc_init)
        ctx.provides = ctx.provides | {"critic"}
        ctx.critic = CriticView(lambda: unwrap(self.players["discriminator"]) if "discriminator" in self.players
                                else self._disc, tuple(student.output_shape),
                                trained=lambda: self.players["discriminator"])
        self._ctx_of = lambda role: replace(ctx, role=role, provides=frozenset({"critic"}))

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
        out.update(self._last_student)
        out["loss"] = nan_guard(fake, out["loss_g"] + out["loss_d"])
        return out
