"""Neuron selectivity transfer (Huang & Wang 2017): squared MMD between normalised channel responses."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from kdlab.config import bounded, choice
from kdlab.losses.nst import NST_KERNELS, nst_loss
from kdlab.terms._feature_maps import map_shapes
from kdlab.terms.base import TERMS, Term, TermConfig, layer_pairs, pick


@TERMS.register("nst")
class NSTTerm(Term):
    """NST over ``layers`` pairs (student, teacher) (Huang & Wang 2017, "Like what you like"), summed.

    Each channel's H*W responses are L2-normalised; the term is the squared MMD between the student's and
    the teacher's sets of channel vectors, ``mean k(t,t') + mean k(s,s') - 2 mean k(s,t)`` per example,
    averaged over the batch (:func:`kdlab.losses.nst.nst_loss`). Kernel ``poly`` ``(x^T y + c)^d`` with
    d = 2, c = 0 by default (the paper's best; RepDistiller's), or ``linear`` / ``gaussian`` (sigma^2 =
    ``sigma2``, or null: the mean squared pair distance). Channel counts may differ; spatial sizes must
    be equal (ConfigError at build); teacher detached."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [[student map, teacher map], ...]
        kernel: str = choice("poly", NST_KERNELS)
        degree: int = bounded(2, ge=1)  # d of the polynomial kernel
        c: float = bounded(0.0, ge=0)  # c of the polynomial kernel
        sigma2: Optional[float] = bounded(None, gt=0, optional=True)  # Gaussian sigma^2; null: mean squared pair distance

    requires = frozenset({"teacher", "features"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.pairs = layer_pairs(cfg.layers, "nst")
        map_shapes(self.pairs, ctx, "nst", same_size=True)
        self.expose(self.pairs)

    def forward(self, s, t, batch):
        cfg = self.cfg
        sigma2 = None if cfg.sigma2 is None else float(cfg.sigma2)
        return sum(nst_loss(pick(s, a), pick(t, b).detach(), kernel=cfg.kernel, degree=int(cfg.degree), c=float(cfg.c),
                            sigma2=sigma2) for a, b in self.pairs)
