"""Mean absolute error between student and teacher logits (DFAD, Fang et al. 2019, eq. 4)."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import choice
from kdlab.losses.datafree import L1_REDUCTIONS, logit_l1
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("l1")
class L1LogitsTerm(Term):
    """DFAD's student loss: ``(1/n) ||z_s - z_t||_1`` on logits, teacher detached.

    ``reduction: mean`` (default, DFAD's ``F.l1_loss``: n = B * K) or ``batchmean`` (n = B: the L1 norm
    over classes averaged over the batch) (:func:`kdlab.losses.datafree.logit_l1`). A term of its own,
    not a mode of ``logits``: that term is squared error (Ba & Caruana) and its modes are reductions of it."""

    @dataclass
    class Config(TermConfig):
        reduction: str = choice("mean", L1_REDUCTIONS)

    requires = frozenset({"teacher", "logits"})

    def forward(self, s, t, batch):
        return logit_l1(s.out, t.out.detach(), reduction=self.cfg.reduction)
