"""SKD's direction loss (Streamlined Knowledge Distillation, Jeong et al., CVPR 2026)."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import bounded, choice
from kdlab.losses.skd import SKD_MODES, skd_direction_loss
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("skd_direction")
class SKDDirectionTerm(Term):
    """``L_DIR`` between the Gram matrices of the student's and the teacher's L2-normalised logits, a Mahalanobis
    norm under their difference's Tikhonov-regularised covariance (:func:`kdlab.losses.skd.skd_direction_loss`):
    ``mode: paper`` (torchdistill ``SKDDirectionLoss``) or ``code`` (the authors' code: Gram / K and the
    median class-mass mask share). ``tikhonov`` 0.1 as the authors' code. Needs batches of >= 2 examples."""

    @dataclass
    class Config(TermConfig):
        tikhonov: float = bounded(0.1, gt=0)  # lambda of Sigma' = cov(D) + lambda I
        mode: str = choice("paper", SKD_MODES)

    requires = frozenset({"teacher", "logits"})

    def forward(self, s, t, batch):
        return skd_direction_loss(s.out, t.out, self.cfg.tikhonov, self.cfg.mode)
