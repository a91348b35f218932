"""KDGAN's discriminator objective (Wang et al. 2018, appendix B): d ascends
``(1/k) sum_i [log p_d(x, y) + alpha log(1 - p_d(x, z^c_i)) + (1 - alpha) log(1 - p_d(x, z^t_i))]``, the true
pair against the classifier's and the teacher's pseudo labels; as a loss, its negative.

Convention of this discriminator objective: ``s.out`` = d's logits ``l_d(x)`` [B, K] (``p_d(x, y) =
sigmoid(l_d(x)_y)``), ``s.derived["z_c"]``, ``s.derived["z_t"]`` the players' pseudo labels [k, B] (sampled by the
game without a graph), ``batch.y`` the true labels; ``alpha`` from the game (``ctx.game.alpha``).
"""
from __future__ import annotations

from kdlab.config import ConfigError
from kdlab.losses import kdgan as K
from kdlab.terms.base import TERMS, Term


@TERMS.register("kdgan_discriminator")
class KDGANDiscriminatorTerm(Term):
    """``-(1/k) sum_i [...]`` (:func:`kdlab.losses.kdgan.discriminator_objective`), the discriminator's loss.

    Raises (at construction): ConfigError: no KDGAN game in the context.
    """

    requires = frozenset({"logits", "labels"})
    roles = frozenset({"discriminator"})

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        if ctx.game is None or not hasattr(ctx.game, "alpha"):
            raise ConfigError(f"term 'kdgan_discriminator' is a term of the KDGAN game; method {ctx.method!r} plays none")
        self._game = ctx.game

    def forward(self, s, t, batch):
        return -K.discriminator_objective(s.out, batch.y, s.derived["z_c"], s.derived["z_t"], self._game.alpha)
