"""SKD's instance loss (Streamlined Knowledge Distillation, Jeong et al., CVPR 2026)."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import choice, temperature_field
from kdlab.losses.skd import SKD_MODES, skd_instance_loss
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("skd_instance")
class SKDInstanceTerm(Term):
    """``L_INS`` of the student's logits towards the teacher's (:func:`kdlab.losses.skd.skd_instance_loss`):
    ``mode: paper`` (softened KL, batchmean, as torchdistill ``SKDInstanceLoss``) or ``code`` (the authors'
    code: ``tau^2`` and the median-confidence mask share). ``temperature`` 4 as the authors' code; their
    weight 0.5 beside CE 0.5 is the recipe's to set."""

    @dataclass
    class Config(TermConfig):
        temperature: float = temperature_field(4.0)
        mode: str = choice("paper", SKD_MODES)

    requires = frozenset({"teacher", "logits"})

    def forward(self, s, t, batch):
        return skd_instance_loss(s.out, t.out, self.cfg.temperature, self.cfg.mode)
