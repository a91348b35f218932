"""MosaicKD's label-space alignment ``L_align = 1/B sum_i H(p_t(.|x_i))`` (nats): the mean entropy of the
teacher's predictions on the generator's images; minimising it makes the teacher confident ("globally
legitimate" samples; main paper, published code "Eqn. 4"). Range ``[0, log K]``."""
from __future__ import annotations

from kdlab.losses.mosaic import align_loss
from kdlab.terms.base import TERMS, Term


@TERMS.register("align")
class AlignTerm(Term):
    """Mean teacher entropy on the generator's images (:func:`kdlab.losses.mosaic.align_loss`); the gradient
    reaches the generator through the teacher's input."""

    requires = frozenset({"teacher"})
    roles = frozenset({"generator"})

    def forward(self, s, t, batch):
        return align_loss(t.out)
