"""GAN-Compression's intermediate feature distillation through learned 1x1 convolutions (Li et al. 2020;
VEM paper appendix A.2.3, eq. 21)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from kdlab.config import choice
from kdlab.losses.gan_compression_distill import FeatureDistillLoss
from kdlab.losses.image import REDUCTIONS
from kdlab.models.i2i import init_normal
from kdlab.terms._images import generator_pairs
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("gc_distill")
class GCDistillTerm(Term):
    """``L_distill = sum_l E_x ||f_l(G_l^s(x)) - G_l^t(x)||_F^2`` (eq. 21;
    :class:`kdlab.losses.gan_compression_distill.FeatureDistillLoss`, which owns the 1x1 adapters ``f_l``,
    trained with the student).

    ``layers``: generator feature pairs (``[]``: the generators' defaults, GAN-Compression's choice for the
    ResNet generator: the blocks' input and blocks n/3, 2n/3, n). ``reduction: mean`` (default, the
    GAN-Compression code's ``F.mse_loss``, the convention of its lambda_distill) or ``sum`` (the equation).
    The adapters start as the code's (``base_resnet_distiller.py``: ``networks.init_net(netA)``, N(0, 0.02), bias 0).
    The reconstruction term of eq. 19-20 is ``l1_image``; the once-for-all supernet search is out of scope.
    0 when the adapted student maps equal the teacher's.

    Raises (at construction): ConfigError for unknown features or pairs of different spatial sizes.
    """

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [] = the generators' default distilled layers
        reduction: str = choice("mean", REDUCTIONS)

    requires = frozenset({"teacher", "images", "features"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.pairs, shapes = generator_pairs(cfg.layers, ctx, "gc_distill", same_size=True)
        self.expose(self.pairs)
        self.loss = FeatureDistillLoss([s[0] for s, _ in shapes], [t[0] for _, t in shapes], cfg.reduction)
        init_normal(self.loss)  # the code's networks.init_net(netA): weights N(0, 0.02), biases 0

    def forward(self, s, t, batch):
        return self.loss([s.features[a] for a, _ in self.pairs], [t.features[b] for _, b in self.pairs])
