"""Class balance of a generated batch: ``-H(pbar) = sum_y pbar(y) log_b pbar(y)`` with ``pbar`` the
batch-mean teacher prediction. One quantity under three names in the literature: MosaicKD's balance
(supplement eq. 1; published code log2, weight 10), DAFL's information entropy loss (eq. 7; code log10,
beta 5), DFQ / Fast-Datafree's balance (natural log). Range ``[-log_b K, 0]``: ``-log_b K`` iff the batch
is spread evenly over the classes."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import choice
from kdlab.losses.mosaic import BALANCE_LOG_BASES, balance_loss
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("entropy_balance")
class EntropyBalanceTerm(Term):
    """``sum_y pbar(y) log_b pbar(y)`` of the teacher on the generator's images (:func:`kdlab.losses.mosaic.balance_loss`)."""

    @dataclass
    class Config(TermConfig):
        log_base: str = choice("e", BALANCE_LOG_BASES)  # e: nats (DFQ) | 2: MosaicKD code | 10: DAFL code

    requires = frozenset({"teacher"})
    roles = frozenset({"generator"})

    def forward(self, s, t, batch):
        return balance_loss(t.out, log_base=self.cfg.log_base)
