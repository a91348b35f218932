"""CAT's kernel alignment distillation (Jin et al. 2021; VEM paper appendix A.2.4, eq. 23)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from kdlab.losses.cat import kernel_alignment_loss
from kdlab.terms._images import generator_pairs
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("kernel_alignment")
class KernelAlignmentTerm(Term):
    """``L_KA = -sum_l KA(rho(G_l^s(x)), rho(G_l^t(x)))`` (eq. 23; :func:`kdlab.losses.cat.kernel_alignment_loss`).

    KA compares the batch's n x n kernels, so no adapters are needed and the student's maps may be
    narrower (and of another size). In [-L, 0]: -L (its minimum) when every layer aligns perfectly, e.g.
    student features equal to the teacher's up to scale or an orthogonal map. ``center: true`` is linear
    CKA (Kornblith et al. 2019); eq. 23 does not centre. Needs batches of more than one example to be
    informative (a single example always aligns).

    Raises (at construction): ConfigError for unknown features or non-map features.
    """

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [] = the generators' default distilled layers
        center: bool = False

    requires = frozenset({"teacher", "images", "features"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.pairs, _ = generator_pairs(cfg.layers, ctx, "kernel_alignment")
        self.expose(self.pairs)

    def forward(self, s, t, batch):
        return kernel_alignment_loss([s.features[a] for a, _ in self.pairs], [t.features[b] for _, b in self.pairs],
                                     center=self.cfg.center)
