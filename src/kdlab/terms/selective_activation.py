"""GCC's architecture loss of the selective activation discriminator (Li et al. 2021, sec. 3.2), the objective of
the student discriminator's channel gates (player ``discriminator_gates``). Official code: SJLeo/GCC
models/SAGAN.py ``backward_D_arch`` / ``get_D_arch_diff`` / ``adaptive_ema_beta``, train.py (the gates' step
after every G step, on a batch of their own)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from kdlab.config import ConfigError, bounded, choice
from kdlab.losses.gcc import GAP_MODES, adversarial_gap, selective_activation_loss
from kdlab.models.base import frozen
from kdlab.models.gates import channel_gates
from kdlab.terms.base import TERMS, Term, TermConfig

#: ``teacher_gap_ema``: GCC's moving average of the teacher's gap (beta = 1 - epoch / epochs), or none
GAP_EMAS = ("adaptive", "none")


@TERMS.register("selective_activation")
class SelectiveActivationTerm(Term):
    """``L_arch = |gap(D^s(G^s(z))) - gap_t| + d_weight * (L_D^real(D^s(x)) + L_D^fake(D^s(G^s(z))))``
    (:func:`kdlab.losses.gcc.selective_activation_loss`), minimised over the gates of the student's
    discriminator D^s (its weights frozen meanwhile); ``gap = |L_G - L_D^fake|`` in the game's ``mode``.

    ``gap_t = gap(D^t(G^t(z)))``: the teacher discriminator's (capability ``teacher_critic``, frozen) on the teacher's
    images of the same z; with ``teacher_gap_ema: adaptive`` (GCC's code) a moving average
    ``gap_t <- beta * gap_t(now) + (1 - beta) * gap_t`` with ``beta = 1 - epoch / epochs`` (1 in the first epoch),
    kept in the gates' player (:class:`kdlab.models.gates.GateSet`, checkpointed). With ``none``: the current value.
    GCC's code takes the gates' step on a validation batch; the host method (``gan-compression``) takes it on the
    step's real batch and a fresh z.

    Inputs (the host method's call): ``s.out`` the student's images [B, C, H, W] (no gradient), ``t.out`` the
    teacher's images of the same inputs, ``batch.target`` real images, ``batch.x`` the source images of a
    conditional D.

    Raises (at construction): ConfigError when the student's discriminator has no gates (``players.disc_gates``)
    or no teacher discriminator is given, or the host does not tell the number of epochs (adaptive EMA).
    """

    @dataclass
    class Config(TermConfig):
        mode: str = choice("hinge", GAP_MODES)  # the game of the discriminators (GCC's gan_mode; SAGAN hinge)
        d_weight: float = bounded(1.0, ge=0)  # D's own loss in L_arch (GCC: 1 on SAGAN, 0.5 on Pix2Pix)
        teacher_gap_ema: str = choice("adaptive", GAP_EMAS)

    requires = frozenset({"critic", "teacher_critic"})
    roles = frozenset({"discriminator_gates"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.critic, self.teacher_critic = ctx.critic, ctx.teacher_critic
        game = ctx.game
        if not channel_gates(self.critic.get()) or getattr(game, "gates", None) is None:
            raise ConfigError("objective.discriminator_gates.selective_activation trains the channel gates of the student's "
                              "discriminator, but it has none; set players.disc_gates (GCC's threshold, 0.1 on SAGAN)")
        self.epochs: Optional[int] = getattr(game, "epochs", None)
        if self.cfg.teacher_gap_ema == "adaptive" and not self.epochs:
            raise ConfigError("objective.discriminator_gates.selective_activation.teacher_gap_ema = 'adaptive' needs the "
                              f"number of epochs; method {ctx.method!r} does not give it: set teacher_gap_ema=none")
        object.__setattr__(self, "_gates", game.gates)  # the player holding the state (not a submodule of the term)

    @property
    def beta(self) -> float:
        """GCC's ``adaptive_ema_beta``: ``1 - epoch / epochs`` after ``epoch`` finished epochs; 1 without the EMA."""
        if self.cfg.teacher_gap_ema != "adaptive":
            return 1.0
        return 1.0 - float(self._gates.epochs_done) / float(self.epochs)

    def forward(self, s, t, batch):
        cond = batch.x if self.critic.condition_channels else None
        state = self._gates.teacher_gap
        with torch.no_grad():
            gap = adversarial_gap(self.teacher_critic.scores(t.out.detach(), cond), self.cfg.mode)
            if float(state) != 0.0:  # GCC: the first value is taken as is
                gap = self.beta * gap + (1.0 - self.beta) * state.to(gap.dtype)
            state.copy_(gap)
        pair = (lambda img: img) if cond is None else (lambda img: torch.cat([cond, img], 1))  # noqa: E731
        D = self.critic.trained()
        disc = self.critic.get()
        with frozen(disc, keep=[p for g in channel_gates(disc) for p in g.parameters()]):
            real, fake = D(pair(batch.target)), D(pair(s.out.detach()))
        return selective_activation_loss(real, fake, gap, self.cfg.mode, self.cfg.d_weight)


__all__ = ["SelectiveActivationTerm"]
