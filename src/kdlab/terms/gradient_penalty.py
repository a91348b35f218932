"""WGAN-GP's gradient penalty (Gulrajani et al. 2017, eq. 3), a term of the discriminator's objective:
``mean_i (||grad_x D(x_hat_i)||_2 - 1)^2`` with ``x_hat = eps real + (1 - eps) fake``, ``eps ~ U[0, 1]`` per
image; the weight is the paper's lambda (10). With ``gan`` in ``wgan`` mode it is the WGAN-GP game."""
from __future__ import annotations

from kdlab.config import ConfigError
from kdlab.losses import gradient_penalty
from kdlab.terms.base import TERMS, Term


@TERMS.register("gradient_penalty")
class GradientPenaltyTerm(Term):
    """:func:`kdlab.losses.gradient_penalty` of the discriminator on real (``t.x``) and generated (``s.x``) images,
    with gradients to D's parameters (D as wrapped for training).

    Raises (at construction): ConfigError: a conditional discriminator (not supported).
    """

    requires = frozenset({"critic"})
    roles = frozenset({"discriminator"})

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        if ctx.critic.condition_channels:
            raise ConfigError(f"objective.discriminator.gradient_penalty: method {ctx.method!r} has a conditional "
                              "discriminator, which the penalty does not support")
        self._critic = ctx.critic

    def forward(self, s, t, batch):
        return gradient_penalty(self._critic.trained(), t.x, s.x)
