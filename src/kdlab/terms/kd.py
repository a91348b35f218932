"""Hinton et al. 2015 soft targets: ``T^2 KL(softmax(z_t / T) || softmax(z_s / T))``, batchmean."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import choice, temperature_field
from kdlab.losses.kd import KD_REDUCTIONS, kd_loss
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("kd")
class KDTerm(Term):
    """Soft targets at temperature T (Hinton et al. 2015): ``T^2 KL(p_t^T || p_s^T)``.

    Default: KL summed over classes and averaged over the batch (``reduction: batchmean``), times T^2
    (``t_squared: true``) so gradient scales stay comparable across temperatures; ``reduction: mean``
    (PyTorch's elementwise mean over B x K, as KD_Lib / some torchdistill configs) or ``sum``, and
    ``t_squared: false``, reproduce other frameworks' numbers. ``standardize: true`` is logit
    standardisation (Sun et al., CVPR 2024): both logit rows z-scored before the softened KL, ``temperature``
    then the base temperature (the official CIFAR-100 runs: T = 2 with KD weight 9, CE 0.1;
    :func:`kdlab.losses.kd.standardize_logits`). Teacher logits detached (:func:`kdlab.losses.kd_loss`)."""

    @dataclass
    class Config(TermConfig):
        temperature: float = temperature_field(4.0)
        reduction: str = choice("batchmean", KD_REDUCTIONS)
        t_squared: bool = True
        standardize: bool = False  # logit standardisation (Sun et al. 2024): z-score both logit rows first

    requires = frozenset({"teacher", "logits"})
    legacy = {"kd": "weight", "temperature": "temperature"}

    def forward(self, s, t, batch):
        return kd_loss(s.out, t.out, self.cfg.temperature, reduction=self.cfg.reduction,
                       t_squared=bool(self.cfg.t_squared), standardize=bool(self.cfg.standardize))
