"""DIST (Huang et al. 2022): Pearson-correlation matching of predictions between and within classes."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import bounded
from kdlab.losses.dist import dist_loss
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("dist")
class DISTTerm(Term):
    """DIST (Huang et al., NeurIPS 2022): ``tau^2 (beta L_inter + gamma L_intra)`` with ``P = softmax(Z / tau)``.

    ``L_inter``: mean over examples of ``1 - pearson(P_s[i, :], P_t[i, :])``; ``L_intra``: mean over classes
    of ``1 - pearson(P_s[:, c], P_t[:, c])`` (across the batch); teacher detached
    (:func:`kdlab.losses.dist.dist_loss`). Defaults beta 1, gamma 1, tau 1: the paper's ImageNet setting
    (the reference code's CIFAR-100 setting: beta 2, gamma 2, tau 4)."""

    @dataclass
    class Config(TermConfig):
        beta: float = bounded(1.0, ge=0)
        gamma: float = bounded(1.0, ge=0)
        tau: float = bounded(1.0, gt=0)

    requires = frozenset({"teacher", "logits"})

    def forward(self, s, t, batch):
        return dist_loss(s.out, t.out, beta=self.cfg.beta, gamma=self.cfg.gamma, tau=self.cfg.tau)
