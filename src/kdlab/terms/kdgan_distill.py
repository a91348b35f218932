"""KDGAN's distillation loss L_DS (Wang et al. 2018, appendix B): the player learns the OTHER player's
(detached) distribution: the classifier the teacher's (weight beta, 2 in the paper), the teacher the
classifier's (weight gamma, 1e-4). ``mode: l2`` (appendix B: squared error between log-probabilities) or
``kl`` (``T^2 KL(p_other^T || p_self^T)``, Hinton's)."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import choice, temperature_field
from kdlab.losses import kdgan as K
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("kdgan_distill")
class KDGANDistillTerm(Term):
    """:func:`kdlab.losses.kdgan.kdgan_distill_loss` of the player's logits ``s.out`` towards ``t.out`` (detached)."""

    @dataclass
    class Config(TermConfig):
        mode: str = choice("l2", K.DISTILL_MODES)  # l2 (on log-probabilities, appendix B) | kl
        temperature: float = temperature_field(1.0)  # of mode kl

    requires = frozenset({"teacher", "logits"})
    roles = frozenset({"student", "teacher"})

    def forward(self, s, t, batch):
        return K.kdgan_distill_loss(s.out, t.out.detach(), self.cfg.mode, self.cfg.temperature)
