"""Activation-boundary transfer (Heo et al. 2019, eq. 6) with a learned connector per pair."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from torch import nn

from kdlab.config import ConfigError, bounded, choice
from kdlab.losses.ab import AB_REDUCTIONS, ab_loss
from kdlab.losses.adapters import ConvRegressor
from kdlab.terms.base import TERMS, Term, TermConfig, layer_pairs, pick


@TERMS.register("ab")
class ABTerm(Term):
    """Activation-boundary loss over ``layers`` pairs (student, teacher) (Heo et al. 2019, eq. 6), summed.

    A connector r (1x1 conv + BN, adaptive average pooling when the student map is larger; a linear layer
    for vectors: :class:`kdlab.losses.adapters.ConvRegressor`, trained with the student) maps the student
    feature onto the teacher's shape; per neuron ``(r+m)^2 1[r > -m, t <= 0] + (r-m)^2 1[r <= m, t > 0]``,
    averaged over all neurons (``reduction: mean``) or summed per example and averaged over the batch
    (``batchmean``); margin m = 1 (paper). Name a PRE-activation teacher feature (e.g. a module path such
    as ``conv2.0``, the conv before the ReLU): only the sign of t is used; a post-ReLU map has the same
    signs, but a map positive almost everywhere leaves ``t <= 0`` only at exact zeros. Teacher detached."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [[student feature, teacher pre-activation], ...]
        margin: float = bounded(1.0, gt=0)
        reduction: str = choice("mean", AB_REDUCTIONS)

    requires = frozenset({"teacher", "features"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.pairs = layer_pairs(cfg.layers, "ab")
        s_shapes = ctx.student_shapes([a for a, _ in self.pairs], "ab")
        t_shapes = ctx.teacher_shapes([b for _, b in self.pairs], "ab")
        connectors = []
        for a, b in self.pairs:
            try:
                connectors.append(ConvRegressor(s_shapes[a], t_shapes[b]))
            except ValueError as exc:
                raise ConfigError(f"term 'ab': student {a!r} {tuple(s_shapes[a])} cannot be connected to teacher {b!r} "
                                  f"{tuple(t_shapes[b])}: {exc}") from None
        self.connectors = nn.ModuleList(connectors)
        self.expose(self.pairs)

    def forward(self, s, t, batch):
        return sum(ab_loss(r(pick(s, a)), pick(t, b).detach(), margin=self.cfg.margin, reduction=self.cfg.reduction)
                   for r, (a, b) in zip(self.connectors, self.pairs))
