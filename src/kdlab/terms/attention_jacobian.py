"""Attention-map Jacobian matching (Srinivas & Fleuret 2018, eq. 10; pooling of sec. 6.3.2)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from kdlab.config import ConfigError, bounded
from kdlab.losses import attention_jacobian_loss, attention_pool_window
from kdlab.terms.attention import check_same_size
from kdlab.terms.base import TERMS, Term, TermConfig, layer_pairs


@TERMS.register("attention_jacobian")
class AttentionJacobianTerm(Term):
    """Attention-map Jacobian matching over ``layers`` pairs (Srinivas & Fleuret 2018, eq. 10).

    Sum over the pairs of eq. 10: unit-normalised input gradients of the pooled attention
    map at the teacher's argmax position, squared distance (:func:`kdlab.losses.attention_jacobian_loss`);
    a train-mode student's maps come from its Jacobian pass (:attr:`kdlab.terms.Outputs.for_jacobian`).
    ``pool``: window = feature size / pool (1 = global "Full", 0 = none; Table 5)."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)
        pool: int = bounded(5, ge=0)

    requires = frozenset({"teacher", "features", "input_grad"})
    legacy = {"attention_jacobian": "weight", "attention_jacobian_layers": "layers", "attention_pool": "pool"}

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.pairs = layer_pairs(cfg.layers, "attention_jacobian")
        try:
            attention_pool_window(7, cfg.pool)
        except ValueError as e:
            raise ConfigError(f"{e} (objective.student.attention_jacobian.pool)") from None
        check_same_size(self.pairs, ctx, "attention_jacobian")
        self.student_features = [s for s, _ in self.pairs]
        self.teacher_features = [t for _, t in self.pairs]

    def forward(self, s, t, batch):
        sj, tj = s.for_jacobian, t.for_jacobian  # per-sample input gradients (BatchNorm statistics held constant)
        return sum(attention_jacobian_loss(sj.features[a], tj.features[b], sj.x, self.cfg.pool) for a, b in self.pairs)
