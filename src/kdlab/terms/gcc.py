"""GCC's distillation loss (Li et al. 2021, generator-discriminator cooperative compression; VEM paper
appendix A.2.2, eqs. 16-18), with the discriminator's channel selection."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from kdlab.config import ConfigError, bounded, choice
from kdlab.losses.gan_compression_distill import Conv1x1Adapters
from kdlab.losses.gcc import GRAM_NORMS, gcc_kd_loss
from kdlab.losses.image import REDUCTIONS
from kdlab.terms._images import generator_pairs
from kdlab.terms.base import TERMS, Term, TermConfig


def select_channels(student: torch.Tensor, teacher: torch.Tensor, fraction: float):
    """The ``ceil(fraction * C)`` channels of two maps [B, C, H, W] where the teacher's map is most active
    (mean |activation| over the batch and positions), as ``(student[:, idx], teacher[:, idx])``."""
    c = student.shape[1]
    k = max(1, math.ceil(fraction * c))
    if k >= c:
        return student, teacher
    idx = teacher.detach().abs().mean(dim=(0, 2, 3)).topk(k).indices
    return student[:, idx], teacher[:, idx]


@TERMS.register("gcc")
class GCCTerm(Term):
    """``L_GCC-KD`` of eq. 17: ``sum_k d(D_k(G^s(x)), D_k(G^t(x))) + sum_l d(f_l(G_l^s(x)), G_l^t(x))
    + lambda_recon ||G^s(x) - G^t(x)||_1`` with eq. 18 ``d = lambda_mse ||X - Y||^2 + lambda_style
    ||Gram(X) - Gram(Y)||^2`` (:func:`kdlab.losses.gcc.gcc_kd_loss`).

    ``D_k``: the features ``d_layers`` (``[]``: all hidden layers) of the method's discriminator, read through
    :class:`kdlab.terms.CriticView` (the method trains it; the term never steps it; its parameters get no
    gradient from this term). Student and teacher images go through D as one batch. GCC's discriminator
    channel selection (matching D's capacity to the student's): of each D map only the ``disc_channels``
    fraction of channels (``null``: student ngf / teacher ngf) where the teacher image's activation is
    largest is compared, re-selected every step; a magnitude selection standing in for GCC's learned one.
    ``layers``: generator feature pairs (``null``: the generators' defaults; ``[]``: none), through 1x1
    adapters ``f_l`` owned by the term. ``reduction: mean`` (default) or ``sum`` (the equations).
    0 when the student equals the teacher (and its adapted features the teacher's).

    Raises (at construction): ConfigError without a discriminator (no ``objective.student.gan`` term), unknown
    discriminator or generator features (lists the known ones).
    """

    @dataclass
    class Config(TermConfig):
        d_layers: List[str] = field(default_factory=list)  # discriminator features; [] = all its hidden layers
        layers: Optional[List[List[str]]] = None  # generator pairs; null = defaults; [] = none
        lambda_mse: float = bounded(1.0, ge=0)
        lambda_style: float = bounded(1.0, ge=0)
        lambda_recon: float = bounded(1.0, ge=0)
        normalize: str = choice("chw", GRAM_NORMS)  # Gram scale
        reduction: str = choice("mean", REDUCTIONS)
        disc_channels: Optional[float] = bounded(None, gt=0, le=1, optional=True)  # fraction of D channels; null = ngf ratio

    requires = frozenset({"teacher", "images", "features", "critic"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.critic = ctx.critic
        self.d_layers = list(cfg.d_layers) or self.critic.feature_names()
        if not self.d_layers:
            raise ConfigError("objective.student.gcc.d_layers: the discriminator has no named features; name its module paths")
        self.critic.shapes(self.d_layers, "gcc")
        self.pairs, shapes = ([], []) if cfg.layers is not None and len(cfg.layers) == 0 else \
            generator_pairs(cfg.layers, ctx, "gcc", same_size=True)
        self.expose(self.pairs)
        self.adapters = Conv1x1Adapters([s[0] for s, _ in shapes], [t[0] for _, t in shapes]) if shapes else None
        fraction = cfg.disc_channels
        if fraction is None:
            s_ngf, t_ngf = getattr(ctx.student, "ngf", None), getattr(ctx.teacher, "ngf", None)
            fraction = min(1.0, s_ngf / t_ngf) if s_ngf and t_ngf else 1.0
        self.fraction = float(fraction)

    def forward(self, s, t, batch):
        cfg = self.cfg
        n = s.out.shape[0]
        cond = None if batch.x is None else torch.cat([batch.x, batch.x])
        feats = self.critic.features(torch.cat([s.out, t.out.detach()]), self.d_layers, cond)
        sd, td = [], []
        for name in self.d_layers:
            a, b = select_channels(feats[name][:n], feats[name][n:].detach(), self.fraction)
            sd.append(a)
            td.append(b)
        sg = self.adapters.adapt([s.features[a] for a, _ in self.pairs]) if self.adapters is not None else []
        tg = [t.features[b] for _, b in self.pairs]
        return gcc_kd_loss(sd, td, sg, tg, s.out, t.out, lambda_recon=cfg.lambda_recon, lambda_mse=cfg.lambda_mse,
                           lambda_style=cfg.lambda_style, normalize=cfg.normalize, reduction=cfg.reduction)
