"""OMGD's total variation of the student's image (VEM paper appendix A.2.1, eq. 12)."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import choice
from kdlab.losses.image import TV_NORMS, TV_REDUCTIONS, total_variation
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("tv")
class TotalVariationTerm(Term):
    """``L_TV`` of eq. 12: the anisotropic total variation of the student's image
    (:func:`kdlab.losses.image.total_variation`), a smoothness prior that needs no teacher.

    ``norm``: ``l1`` (absolute differences, default) or ``l2`` (squared); ``reduction: mean`` (default,
    divided by C*H*W, so the weight does not depend on the image size), ``sum`` per image (batch mean) or
    ``batch_sum`` over the whole batch (OMGD's code). 0 for a constant image.
    """

    @dataclass
    class Config(TermConfig):
        norm: str = choice("l1", TV_NORMS)
        reduction: str = choice("mean", TV_REDUCTIONS)

    requires = frozenset({"images"})

    def forward(self, s, t, batch):
        return total_variation(s.out, self.cfg.norm, self.cfg.reduction)
