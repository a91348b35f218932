"""CycleGAN's cycle-consistency loss (Zhu et al. 2017, eq. 2), a term of a translation generator's objective:
``E ||F(G(x)) - x||_1``, the mean absolute error between the player's input ``x`` (``batch.x``) and its round
trip through the partner generator F (the game's ``partner``) of its output ``s.out = G(x)``. The published
weight is lambda_cycle = 10."""
from __future__ import annotations

from kdlab.config import ConfigError
from kdlab.losses import cycle_consistency_loss
from kdlab.terms.base import TERMS, Term


@TERMS.register("cycle")
class CycleTerm(Term):
    """:func:`kdlab.losses.cycle_consistency_loss` of ``batch.x`` and ``partner(s.out)``; 0 for inverse generators.

    Raises (at construction): ConfigError: no partner generator (a method other than CycleGAN's game).
    """

    requires = frozenset({"images"})
    roles = frozenset({"generator"})

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        if not hasattr(ctx.game, "partner"):
            raise ConfigError(f"term 'cycle' needs a partner generator (CycleGAN's game); method {ctx.method!r} has none")
        self._game = ctx.game

    def forward(self, s, t, batch):
        return cycle_consistency_loss(batch.x, self._game.partner(s.out))
