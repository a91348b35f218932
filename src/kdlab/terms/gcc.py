"""GCC's distillation loss (Li et al. 2021, generator-discriminator cooperative compression; VEM paper
appendix A.2.2, eqs. 16-18): the teacher discriminator's features of student and teacher images, adapted
generator features and an L1 reconstruction. Official code: SJLeo/GCC models/SAGAN.py ``backward_G``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch

from kdlab.config import ConfigError, bounded, choice
from kdlab.losses.gan_compression_distill import Conv1x1Adapters
from kdlab.losses.gcc import DISTANCES, GRAM_NORMS, gcc_kd_loss
from kdlab.losses.image import REDUCTIONS
from kdlab.terms._images import generator_pairs
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("gcc")
class GCCTerm(Term):
    """``L_GCC-KD`` of eq. 17: ``sum_k d(D_k^t(G^s(x)), D_k^t(G^t(x))) + sum_l d(f_l(G_l^s(x)), G_l^t(x))
    + lambda_recon ||G^s(x) - G^t(x)||_1`` with eq. 18 ``d = lambda_mse ||X - Y||^2 + lambda_style
    ||Gram(X) - Gram(Y)||^2`` (:func:`kdlab.losses.gcc.gcc_kd_loss`).

    ``D_k^t``: the features ``d_layers`` (``[]``: all hidden layers) of the TEACHER's discriminator (capability
    ``teacher_critic``: the teacher GAN run's discriminator, frozen, never updated by any step; GCC's code runs
    ``teacher_model.netD`` on the student's image and compares with its features of the teacher's image).
    Student and teacher images go through D^t as one batch. ``layers``: generator feature pairs (``null``: the
    generators' defaults, SAGAN's ``l2`` and ``attn2`` as GCC's ``generator_extract_layers``; ``[]``: none),
    through 1x1 convolutions ``f_l`` without bias owned by the term (GCC's ``transform_convs``).

    ``distance``: ``root`` (default, GCC's code: ``sqrt(MSE)`` of features and of Gram matrices) or ``squared``
    (eq. 18's squared norms, with ``reduction``: ``mean`` or ``sum`` over each example's entries).
    ``lambda_mse``/``lambda_style``/``lambda_recon`` are GCC's ``lambda_content``/``lambda_gram``/``lambda_L1``
    (its SAGAN script: 1, 1, 0). 0 when the student equals the teacher (and its adapted features the teacher's).

    Raises (at construction): ConfigError without the teacher's discriminator (names why), unknown discriminator
    or generator features (lists the known ones).
    """

    @dataclass
    class Config(TermConfig):
        d_layers: List[str] = field(default_factory=list)  # teacher-discriminator features; [] = all its hidden layers
        layers: Optional[List[List[str]]] = None  # generator pairs; null = defaults; [] = none
        lambda_mse: float = bounded(1.0, ge=0)  # GCC lambda_content
        lambda_style: float = bounded(1.0, ge=0)  # GCC lambda_gram
        lambda_recon: float = bounded(0.0, ge=0)  # GCC lambda_L1 (0 in its SAGAN script)
        distance: str = choice("root", DISTANCES)  # root: GCC's sqrt(MSE); squared: eq. 18
        normalize: str = choice("chw", GRAM_NORMS)  # Gram scale (GCC: / (C*H*W))
        reduction: str = choice("mean", REDUCTIONS)  # of the squared distance and of the L1 term

    requires = frozenset({"teacher", "images", "features", "teacher_critic"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.critic = ctx.teacher_critic
        self.d_layers = list(cfg.d_layers) or self.critic.feature_names()
        if not self.d_layers:
            raise ConfigError("objective.student.gcc.d_layers: the teacher's discriminator has no named features; "
                              "name its module paths")
        self.critic.shapes(self.d_layers, "gcc")
        self.pairs, shapes = ([], []) if cfg.layers is not None and len(cfg.layers) == 0 else \
            generator_pairs(cfg.layers, ctx, "gcc", same_size=True)
        self.expose(self.pairs)
        self.adapters = Conv1x1Adapters([s[0] for s, _ in shapes], [t[0] for _, t in shapes], bias=False) \
            if shapes else None

    def forward(self, s, t, batch):
        cfg = self.cfg
        n = s.out.shape[0]
        cond = None if batch.x is None or not self.critic.condition_channels else torch.cat([batch.x, batch.x])
        feats = self.critic.features(torch.cat([s.out, t.out.detach()]), self.d_layers, cond)
        sd = [feats[name][:n] for name in self.d_layers]
        td = [feats[name][n:].detach() for name in self.d_layers]
        sg = self.adapters.adapt([s.features[a] for a, _ in self.pairs]) if self.adapters is not None else []
        tg = [t.features[b] for _, b in self.pairs]
        return gcc_kd_loss(sd, td, sg, tg, s.out, t.out, lambda_recon=cfg.lambda_recon, lambda_mse=cfg.lambda_mse,
                           lambda_style=cfg.lambda_style, normalize=cfg.normalize, reduction=cfg.reduction,
                           distance=cfg.distance)
