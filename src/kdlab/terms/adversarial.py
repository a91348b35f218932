"""The generator's adversarial distillation term: minus a teacher-student disagreement on its images, so
that it makes images on which the student still disagrees with the teacher.

* ``mode: kl``: ``-T^2 KL(p_t || p_s)`` (batchmean, nats): MosaicKD supplement eq. 4, first term
  (published ``-kldiv(s, t)``, T = 1); DFQ / Fast-Datafree's ``-adv * KL``;
* ``mode: l1``: ``-(1/n) ||z_s - z_t||_1`` on logits: DFAD eq. 5's max over G (``reduction: mean``: DFAD's
  ``F.l1_loss``, n = B * K; ``batchmean``: n = B).

Neither logit tensor is detached: the gradient reaches the generator through BOTH networks' inputs; the
synthesizer freezes the student's parameters while it computes the student's outputs for this term.
"""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import choice, temperature_field
from kdlab.losses.datafree import ADV_MODES, L1_REDUCTIONS, logit_l1
from kdlab.losses.mosaic import adversarial_kl
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("adversarial")
class AdversarialTerm(Term):
    """``-T^2 KL(p_t || p_s)`` (``mode: kl``) or ``-logit_l1(z_s, z_t)`` (``mode: l1``) on the generator's images
    (:func:`kdlab.losses.mosaic.adversarial_kl`, :func:`kdlab.losses.datafree.logit_l1`): ``z_s`` the student's
    logits ``s.opponent.out``, ``z_t`` the teacher's ``t.out``. Scalar <= 0."""

    @dataclass
    class Config(TermConfig):
        mode: str = choice("kl", ADV_MODES)  # kl: MosaicKD / DFQ | l1: DFAD
        temperature: float = temperature_field(1.0)  # T of mode kl
        reduction: str = choice("mean", L1_REDUCTIONS)  # of mode l1 (mean: DFAD's F.l1_loss)

    requires = frozenset({"teacher", "student"})
    roles = frozenset({"generator"})

    def forward(self, s, t, batch):
        student = s.opponent.out  # the student's logits on the generator's images s.out
        if self.cfg.mode == "l1":
            return -logit_l1(student, t.out, reduction=self.cfg.reduction)
        return adversarial_kl(student, t.out, self.cfg.temperature)
