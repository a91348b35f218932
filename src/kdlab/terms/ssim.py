"""OMGD's structural similarity loss ``1 - SSIM`` (VEM paper appendix A.2.1, eq. 15; Wang et al. 2004)."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import ConfigError, bounded, choice
from kdlab.losses.image import SSIM_FORMS, ssim_loss
from kdlab.terms._images import IMAGE_TARGETS, image_target, target_requires
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("ssim")
class SSIMTerm(Term):
    """``L_SSIM = 1 - SSIM(G^s(x), y)`` (eq. 15), y the teacher's image or the ground truth (``target``).

    ``form: unit`` (default): torchmetrics' SSIM (:func:`kdlab.losses.image.ssim_loss`), the [-1, 1] images mapped
    to [0, 1], Gaussian window ``kernel_size`` of std ``sigma``; ``form: omgd``: OMGD's ``pytorch_ssim`` on the
    raw [-1, 1] values with zero padding (its constants assume [0, 1] images). 0 when the images are equal.

    Raises (at construction): ConfigError for an even ``kernel_size``, a window larger than the images
    (names both), or a target the method cannot provide.
    """

    @dataclass
    class Config(TermConfig):
        target: str = choice("teacher", IMAGE_TARGETS)
        kernel_size: int = bounded(11, ge=3)  # odd Gaussian window side
        sigma: float = bounded(1.5, gt=0)
        form: str = choice("unit", SSIM_FORMS)  # unit: torchmetrics on [0, 1] | omgd: OMGD's pytorch_ssim, raw values

    requires = frozenset({"images"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.requires = target_requires(cfg.target, ctx, "ssim")
        if cfg.kernel_size % 2 == 0:
            raise ConfigError(f"objective.student.ssim.kernel_size = {cfg.kernel_size} must be odd (e.g. 11, 7, 3)")
        size = min(ctx.student_shapes(["output"], "ssim")["output"][1:])
        if cfg.kernel_size > size:
            raise ConfigError(f"objective.student.ssim.kernel_size = {cfg.kernel_size} is larger than the images ({size} px); "
                              f"accepted: an odd size <= {size}")

    def forward(self, s, t, batch):
        return ssim_loss(s.out, image_target(self.cfg.target, t, batch), kernel_size=self.cfg.kernel_size,
                         sigma=self.cfg.sigma, form=self.cfg.form)
