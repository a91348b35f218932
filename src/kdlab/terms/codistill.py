"""Codistillation's peer term (Anil et al., ICLR 2018, "online distillation"): the KL towards the OTHER
peer's current predictions, ``T^2 KL(p_j^T || p_i^T)`` (batchmean; the other peer detached), switched on
after ``burn_in_epochs`` epochs (eq. 1's burn-in: the peers first train alone). The CODIS baseline of KDGAN
(Wang et al. 2018, Table 4). In method ``codistill`` each peer's objective has the other peer as its teacher.
"""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import bounded, temperature_field
from kdlab.losses import kd_loss
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("codistill")
class CodistillTerm(Term):
    """``T^2 KL(p_peer^T || p_self^T)`` from epoch ``burn_in_epochs`` on (:func:`kdlab.losses.kd_loss`); 0 before
    (no graph). The host method tells it the epoch (:meth:`set_epoch`)."""

    @dataclass
    class Config(TermConfig):
        temperature: float = temperature_field(1.0)
        burn_in_epochs: int = bounded(0, ge=0)  # epochs without codistillation before the peers start distilling

    requires = frozenset({"teacher", "logits"})

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def forward(self, s, t, batch):
        if self.epoch < self.cfg.burn_in_epochs:
            return s.out.new_zeros(())
        return kd_loss(s.out, t.out, self.cfg.temperature)
