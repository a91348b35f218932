"""L1 reconstruction of the student's image (VEM paper appendix A.2, eqs. 11, 15, 17, 20)."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import choice
from kdlab.losses.image import REDUCTIONS, l1_reconstruction
from kdlab.terms._images import IMAGE_TARGETS, image_target, target_requires
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("l1_image")
class L1ImageTerm(Term):
    """``E_x ||G^s(x) - y||_{1,1}`` with y the teacher's image (eqs. 15, 17, 20 unpaired) or the ground truth
    (``target: ground_truth``, eq. 20 paired; eq. 11) (:func:`kdlab.losses.image.l1_reconstruction`).

    ``reduction: mean`` (default) averages over every pixel, the convention of the pix2pix /
    GAN-Compression / OMGD code (``F.l1_loss``) whose lambda_recon values the recipes use; ``sum`` is the
    equations' per-example sum. Not ``l1``: that is DFAD's logit L1. 0 when the images are equal.

    Raises (at construction): ConfigError for a target the method cannot provide.
    """

    @dataclass
    class Config(TermConfig):
        target: str = choice("teacher", IMAGE_TARGETS)  # teacher image | ground_truth (batch.target, paired data)
        reduction: str = choice("mean", REDUCTIONS)  # mean over pixels (published code) | sum per example (the eqs.)

    requires = frozenset({"images"})
    roles = frozenset({"student", "generator"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.requires = target_requires(cfg.target, ctx, "l1_image")

    def forward(self, s, t, batch):
        return l1_reconstruction(s.out, image_target(self.cfg.target, t, batch), self.cfg.reduction)
