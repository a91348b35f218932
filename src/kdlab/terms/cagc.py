"""CAGC's content-aware distillation (Liu et al. 2021; VEM paper appendix A.2.5, eqs. 24-27): masked
reconstruction, masked feature distillation and masked LPIPS, the mask from a pluggable saliency function."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch

from kdlab.config import ConfigError, bounded, choice
from kdlab.losses.cagc import (SALIENCY, content_mask, masked_distillation_loss, masked_perceptual_loss,
                               masked_reconstruction_loss)
from kdlab.losses.gan_compression_distill import Conv1x1Adapters
from kdlab.losses.image import REDUCTIONS
from kdlab.registry import UnknownNameError
from kdlab.terms._images import generator_pairs, load_feature_network
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("cagc")
class CAGCTerm(Term):
    """``lambda_recon L_recon^mask + lambda_distill L_distill^mask + lambda_lpips L_LPIPS^mask`` (eqs. 24-27):

    * eq. 25 ``E_x ||M (.) (G^s(x) - G^t(x))||_1`` (:func:`kdlab.losses.cagc.masked_reconstruction_loss`);
    * eq. 26 ``sum_l E_x ||M (.) (f_l(G_l^s(x)) - G_l^t(x))||_1`` over the generator pairs ``layers`` (``[]``:
      the generators' defaults), through 1x1 adapters ``f_l`` owned by the term, the mask resized to each
      map (:func:`kdlab.losses.cagc.masked_distillation_loss`; a multi-channel mask is reduced to its
      channel maximum there);
    * eq. 27 ``E_x LPIPS(M (.) G^s(x), M (.) G^t(x))`` on the frozen ``extractor`` classifier's features
      ``lpips_layers`` (only when ``lambda_lpips > 0``; :func:`kdlab.losses.cagc.masked_perceptual_loss`).

    Defaults as CAGC's code (lychenyoko/content-aware-gan-compression ``train_hyperparams.py``, ``train.py:
    KD_loss``): output-only KD (``kd_mode = 'Output_Only'``: ``lambda_distill = 0``), ``kd_l1_lambda = 3``
    on ``torch.mean |M G^t - M G^s|`` (``reduction: mean``), ``kd_lpips_lambda = 3``.

    ``M = saliency(G^t(x))``, a function from :data:`kdlab.losses.cagc.SALIENCY` by name (``foreground``:
    pixels that differ from the border background, standing in for CAGC's face-parsing network; ``ones``:
    no mask), computed without a graph. The mask is checked at construction on a dry run. 0 when the
    student equals the teacher (and its adapted features the teacher's).

    Raises (at construction): ConfigError for an unknown saliency function (lists the known ones), a mask of
    the wrong shape or range (names both shapes), unknown features, ``lambda_lpips > 0`` without extractor,
    or all three weights 0.
    """

    @dataclass
    class Config(TermConfig):
        saliency: str = "foreground"  # kdlab.losses.cagc.SALIENCY name
        # CAGC's code (train_hyperparams.py): kd_l1_lambda 3, kd_mode Output_Only (no feature term), kd_lpips_lambda 3
        lambda_recon: float = bounded(3.0, ge=0)
        lambda_distill: float = bounded(0.0, ge=0)
        lambda_lpips: float = bounded(3.0, ge=0)
        layers: List[List[str]] = field(default_factory=list)  # generator pairs; [] = the generators' defaults
        extractor: Optional[str] = None  # LPIPS feature network (a kdlab classifier), needed when lambda_lpips > 0
        lpips_layers: List[str] = field(default_factory=list)  # its features; [] = all its friendly features
        reduction: str = choice("mean", REDUCTIONS)

    requires = frozenset({"teacher", "images", "features"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        if cfg.lambda_recon == cfg.lambda_distill == cfg.lambda_lpips == 0:
            raise ConfigError("objective.student.cagc: lambda_recon, lambda_distill and lambda_lpips are all 0")
        try:
            self.saliency = SALIENCY.get(cfg.saliency)
        except UnknownNameError as exc:
            raise ConfigError(f"objective.student.cagc.saliency: {exc}") from None
        shape = tuple(ctx.student_shapes(["output"], "cagc")["output"])
        probe = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
        try:
            content_mask(probe, self.saliency)
        except ValueError as exc:
            raise ConfigError(f"objective.student.cagc.saliency = {cfg.saliency!r}: {exc}") from None
        self.pairs, self.adapters = [], None
        if cfg.lambda_distill > 0:
            self.pairs, shapes = generator_pairs(cfg.layers, ctx, "cagc", same_size=True)
            self.adapters = Conv1x1Adapters([s[0] for s, _ in shapes], [t[0] for _, t in shapes])
        self.expose(self.pairs)
        self._record = None
        if cfg.lambda_lpips > 0:
            net, self._record = load_feature_network(cfg.extractor, list(cfg.lpips_layers), ctx, "cagc")
            object.__setattr__(self, "features", net)

    def record(self):
        return {"extractor": self._record, "saliency": self.cfg.saliency} if self._record else {"saliency": self.cfg.saliency}

    def forward(self, s, t, batch):
        cfg = self.cfg
        mask = content_mask(t.out, self.saliency)
        total = s.out.new_zeros(())
        if cfg.lambda_recon > 0:
            total = total + cfg.lambda_recon * masked_reconstruction_loss(s.out, t.out, mask, cfg.reduction)
        if self.adapters is not None:
            adapted = self.adapters.adapt([s.features[a] for a, _ in self.pairs])
            total = total + cfg.lambda_distill * masked_distillation_loss(
                adapted, [t.features[b] for _, b in self.pairs], mask.amax(1, keepdim=True), cfg.reduction)
        if cfg.lambda_lpips > 0:
            total = total + cfg.lambda_lpips * masked_perceptual_loss(s.out, t.out, mask, self.features)
        return total
