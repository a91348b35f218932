"""CycleGAN's identity loss (Zhu et al. 2017 sec. 5.2, after Taigman et al. 2017), a term of a translation
generator's objective: ``E ||G(y) - y||_1`` for images ``y`` of G's OUTPUT domain (``batch.target``), the
mean absolute error over every element; it keeps colours when no change is needed. The published weight is
lambda_cycle * lambda_identity = 10 * 0.5 = 5; both domains need the same number of channels."""
from __future__ import annotations

from kdlab.config import ConfigError
from kdlab.losses import identity_loss
from kdlab.terms.base import TERMS, Term


@TERMS.register("identity")
class IdentityTerm(Term):
    """:func:`kdlab.losses.identity_loss` of ``batch.target`` and the player's own generator applied to it.

    Raises (at construction): ConfigError: no game giving the player's own generator, or domains of different
    channels (names them and how to switch the term off).
    """

    requires = frozenset({"images"})
    roles = frozenset({"generator"})

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        if not hasattr(ctx.game, "own"):
            raise ConfigError(f"term 'identity' needs the game's own generator (CycleGAN's game); method {ctx.method!r} "
                              "has none")
        c_in, c_out = getattr(ctx.student, "in_channels", None), getattr(ctx.student, "out_channels", None)
        if c_in != c_out:
            raise ConfigError(f"objective.{ctx.role}.identity needs domains of equal channels; data set "
                              f"{getattr(ctx.spec, 'name', '?')!r} maps {c_in} to {c_out} channels: set "
                              f"objective.{ctx.role}.identity.weight=0")
        self._game = ctx.game

    def forward(self, s, t, batch):
        return identity_loss(batch.target, self._game.own(batch.target))
