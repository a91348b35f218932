"""Variational information distillation (Ahn et al. 2019, eqs. 2-5) as a term over feature pairs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from torch import nn

from kdlab.config import ConfigError, bounded
from kdlab.losses.vid import VID_EPS, VID_INIT_VAR, VIDLoss
from kdlab.terms.base import OUTPUT, TERMS, Term, TermConfig, layer_pairs, pick


@TERMS.register("vid")
class VIDTerm(Term):
    """VID (Ahn et al. 2019, eqs. 2-5): ``sum_pairs mean 0.5 (log sigma_c^2 + (t - mu(s))^2 / sigma_c^2)``.

    The negative log-likelihood of the teacher feature t under a Gaussian whose mean mu(s) is a learned
    1x1-conv regressor of the student feature and whose per-channel variance is
    ``softplus(alpha_c) + eps`` (:class:`kdlab.losses.vid.VIDLoss`; RepDistiller defaults init_var 5,
    eps 1e-5), averaged over batch, channels and positions without the ``0.5 log 2 pi`` constant, summed
    over ``layers`` pairs (default ``[[output, output]]``: logits, or the generators' images as in the
    VEM paper's VID baseline). Regressors and variances are trained by the student's optimizer; the
    teacher is detached; a larger student map is average-pooled to the teacher's size (a smaller one
    pools the teacher's)."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [[student feature, teacher feature], ...]; [] = output
        init_var: float = bounded(VID_INIT_VAR, gt=0)  # initial sigma^2 (RepDistiller init_pred_var)
        eps: float = bounded(VID_EPS, gt=0)  # variance floor (paper eq. 5, RepDistiller)
        mid_channels: Optional[int] = bounded(None, ge=1, optional=True)  # null: max(teacher channels, 16)

    requires = frozenset({"teacher"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        if cfg.init_var <= cfg.eps:
            raise ConfigError(f"objective.student.vid.init_var = {cfg.init_var} must be > objective.student.vid.eps = {cfg.eps}")
        self.pairs = layer_pairs(cfg.layers, "vid", default=[(OUTPUT, OUTPUT)])
        self.expose(self.pairs)
        s_shapes = ctx.student_shapes([a for a, _ in self.pairs], "vid")
        t_shapes = ctx.teacher_shapes([b for _, b in self.pairs], "vid")
        losses = []
        for a, b in self.pairs:
            s, t = s_shapes[a], t_shapes[b]
            if len(s) != len(t) or len(s) not in (1, 3):
                raise ConfigError(f"term 'vid': features must both be maps (C, H, W) or both vectors (D,); "
                                  f"student {a!r} is {tuple(s)}, teacher {b!r} is {tuple(t)}")
            losses.append(VIDLoss(s, t, mid_channels=cfg.mid_channels, init_var=cfg.init_var, eps=cfg.eps))
        self.losses = nn.ModuleList(losses)

    def forward(self, s, t, batch):
        return sum(vid(pick(s, a), pick(t, b)) for vid, (a, b) in zip(self.losses, self.pairs))
