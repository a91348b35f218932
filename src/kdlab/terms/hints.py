"""FitNets hints (Romero et al. 2015, eq. 3): ``sum_l MSE(r_l(F_s^l), F_t^l)`` with learned regressors r_l."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from torch import nn

from kdlab.losses import HintLoss
from kdlab.terms.base import TERMS, Term, TermConfig, layer_pairs


@TERMS.register("hints")
class HintsTerm(Term):
    """FitNets hints over ``layers`` pairs (student, teacher) with learned regressors (Romero et al. 2015).

    Summed over the pairs ``[student feature, teacher feature]``; each pair has
    its regressor (1x1 conv + BN for maps, linear for vectors; :class:`kdlab.losses.HintLoss`), trained
    with the student by its optimizer. MSE averaged over elements; teacher features detached."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [[student feature, teacher feature], ...]

    requires = frozenset({"teacher", "features"})
    legacy = {"hints": "weight", "hint_layers": "layers"}

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.pairs = layer_pairs(cfg.layers, "hints")
        self.student_features = [s for s, _ in self.pairs]
        self.teacher_features = [t for _, t in self.pairs]
        s_shapes = ctx.student_shapes(self.student_features, "hints")
        t_shapes = ctx.teacher_shapes(self.teacher_features, "hints")
        self.regressors = nn.ModuleList(HintLoss.from_shapes(s_shapes[s], t_shapes[t]) for s, t in self.pairs)

    def forward(self, s, t, batch):
        return sum(h(s.features[a], t.features[b]) for h, (a, b) in zip(self.regressors, self.pairs))
