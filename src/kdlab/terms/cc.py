"""Correlation congruence (Peng et al. 2019): batch correlation matrices under a kernel matched."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from torch import nn

from kdlab.config import bounded, choice
from kdlab.losses.adapters import POOLS, Embed, to_vector
from kdlab.losses.cc import CC_GAMMA, CC_KERNELS, CC_ORDER, cc_loss
from kdlab.terms.base import TERMS, TermConfig, pick
from kdlab.terms.relational import RelationalTerm


@TERMS.register("cc")
class CCTerm(RelationalTerm):
    """Correlation congruence over ``layers`` pairs (Peng et al., ICCV 2019, section 3).

    ``||C_s - C_t||_F^2 / B^2`` with ``C_ij = k(z_i, z_j)`` of the L2-normalised embeddings,
    ``k`` bilinear or the Gaussian RBF as its order-P Taylor series (gamma 0.4, P 2: the public
    CCKD code). ``z = to_vector(feature, pool)``, or with ``embed_dim > 0`` a linear head per side
    to that width (both trained by the student's optimizer, teacher feature detached before its
    head, as RepDistiller/torchdistill's CCKD); summed over pairs (:func:`kdlab.losses.cc.cc_loss`)."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [[student feature, teacher feature], ...]; [] = outputs
        kernel: str = choice("gaussian", CC_KERNELS)
        gamma: float = bounded(CC_GAMMA, gt=0)
        order: int = bounded(CC_ORDER, ge=1)
        embed_dim: int = bounded(0, ge=0)  # 0: no embedding heads
        pool: str = choice("flatten", POOLS)

    term = "cc"

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        dim = int(cfg.embed_dim)
        # Embed's L2 normalisation is off: the kernel normalises anyway
        self.embed_s = nn.ModuleList(Embed(s, dim, cfg.pool, normalize=False) for s, _ in self.shapes) if dim else None
        self.embed_t = nn.ModuleList(Embed(t, dim, cfg.pool, normalize=False) for _, t in self.shapes) if dim else None

    def pair_loss(self, i, s, t):
        a, b = self.pairs[i]
        kw = dict(kernel=self.cfg.kernel, gamma=self.cfg.gamma, order=int(self.cfg.order))
        if self.embed_s is None:
            return cc_loss(to_vector(pick(s, a), self.cfg.pool), to_vector(pick(t, b), self.cfg.pool), **kw)
        head = self.embed_t[i]
        z_t = head(pick(t, b).detach().to(head.linear.weight.dtype))
        return cc_loss(self.embed_s[i](pick(s, a)), z_t, detach_teacher=False, **kw)
