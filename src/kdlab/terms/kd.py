"""Hinton et al. 2015 soft targets: ``T^2 KL(softmax(z_t / T) || softmax(z_s / T))``, batchmean."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import bounded
from kdlab.losses import kd_loss
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("kd")
class KDTerm(Term):
    """Soft targets at temperature T (Hinton et al. 2015): ``T^2 KL(p_t^T || p_s^T)``.

    KL summed over classes and averaged over the batch; the T^2 factor keeps gradient scales
    comparable across temperatures; teacher logits detached (:func:`kdlab.losses.kd_loss`)."""

    @dataclass
    class Config(TermConfig):
        temperature: float = bounded(4.0, gt=0)

    requires = frozenset({"teacher", "logits"})
    legacy = {"kd": "weight", "temperature": "temperature"}

    def forward(self, s, t, batch):
        return kd_loss(s.out, t.out, self.cfg.temperature)
