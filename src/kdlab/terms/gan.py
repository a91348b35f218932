"""The adversarial game as a term, for the generator or the discriminator (the player's role decides).

``mode`` picks the game:

==========  ===============================================  ==========================================
mode        discriminator (``objective.discriminator``)      generator (``objective.generator``)
==========  ===============================================  ==========================================
vanilla     BCE: real -> 1, generated -> 0 (Goodfellow)      non-saturating BCE of D(G(z)) -> 1
lsgan       ``(D(x) - 1)^2 + D(G(z))^2`` (Mao et al.)        ``(D(G(z)) - 1)^2``
hinge       ``relu(1 - D(x)) + relu(1 + D(G(z)))`` (SAGAN)   ``-D(G(z))``
wgan        ``D(G(z)) - D(x)`` (Arjovsky et al. eq. 2)       ``-D(G(z))``
==========  ===============================================  ==========================================

The discriminator's loss is the sum of its real and generated halves in every mode; pix2pix's and
CycleGAN's code halve it ("divide the objective by 2 while optimising D"): their recipes give the
discriminator's ``gan`` term the weight 0.5. ``reduction``: ``mean`` averages over the images (and every patch of a PatchGAN map); ``patch_sum`` (vanilla
only) is MosaicKD's published reduction: BCE SUMMED over the map and divided by the batch size, the
discriminator's two halves averaged (:func:`kdlab.losses.mosaic.patch_bce`; MosaicKD's "patch realism"
term of the generator, supplement eq. 5). WGAN's Lipschitz constraint (clipping or a gradient penalty)
is the host method's business.

Convention of a discriminator's objective: ``s`` holds its outputs on the generated images (detached from
the generator; ``s.x`` the images), ``t`` its outputs on real images (``t.x``). The generator's side reads
the discriminator through the method's :class:`~kdlab.terms.base.CriticView` (its parameters frozen while
the generator's loss back-propagates through it) on the player's own images ``s.out`` (conditioned on its
inputs ``batch.x`` for a conditional D, pix2pix's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.config import ConfigError, choice
from kdlab.losses.gan import (bce_discriminator_loss, bce_generator_loss, hinge_discriminator_loss, wgan_critic_loss,
                              wgan_generator_loss)
from kdlab.losses.mosaic import patch_bce, patch_discriminator_loss
from kdlab.losses.translation_gan import map_discriminator_loss, map_generator_loss
from kdlab.terms.base import TERMS, Term, TermConfig

GAMES = ("vanilla", "lsgan", "hinge", "wgan")
REDUCTIONS = ("mean", "patch_sum")


def _flat(scores: torch.Tensor) -> torch.Tensor:
    return scores if scores.dim() == 1 else scores.reshape(-1)


@TERMS.register("gan")
class GANTerm(Term):
    """One game's loss for the player whose objective holds it (generator or discriminator); see the module doc.

    Raises (at construction): ConfigError: ``reduction: patch_sum`` with another mode than vanilla.
    """

    @dataclass
    class Config(TermConfig):
        mode: str = choice("vanilla", GAMES)
        reduction: str = choice("mean", REDUCTIONS)

    requires = frozenset({"critic"})
    roles = frozenset({"student", "generator", "discriminator"})

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        if cfg.reduction == "patch_sum" and cfg.mode != "vanilla":
            raise ConfigError(f"objective.{ctx.role}.gan.reduction = 'patch_sum' is MosaicKD's BCE reduction: it needs "
                              f"mode = 'vanilla', got {cfg.mode!r}")
        self.discriminator = ctx.role == "discriminator"
        self._critic = ctx.critic

    def forward(self, s, t, batch):
        mode, patch = self.cfg.mode, self.cfg.reduction == "patch_sum"
        if self.discriminator:
            real, fake = t.out, s.out
            if patch:
                return patch_discriminator_loss(real, fake)
            if mode == "vanilla":
                return bce_discriminator_loss(_flat(real), _flat(fake))
            if mode == "lsgan":
                return 2.0 * map_discriminator_loss(real, fake, "lsgan")
            return (hinge_discriminator_loss if mode == "hinge" else wgan_critic_loss)(_flat(real), _flat(fake))
        fake = self._critic.scores(s.out, batch.x if self._critic.condition_channels else None)
        if patch:
            return patch_bce(fake, 1.0)
        if mode == "vanilla":
            return bce_generator_loss(_flat(fake))
        if mode == "lsgan":
            return map_generator_loss(fake, "lsgan")
        return wgan_generator_loss(_flat(fake))
