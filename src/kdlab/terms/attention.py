"""Attention transfer (Zagoruyko & Komodakis 2017; Srinivas & Fleuret 2018, eqs. 8-9)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from kdlab.config import ConfigError, bounded, choice
from kdlab.losses import ATTENTION_MODES, attention_loss
from kdlab.terms.base import TERMS, Term, TermConfig, layer_pairs


@TERMS.register("attention")
class AttentionTerm(Term):
    """Attention transfer over ``layers`` pairs (student, teacher) (Zagoruyko & Komodakis 2017; eqs. 8-9).

    ``A = sum_c |F_c|^p`` (eq. 8), maps flattened and L2-normalised; ``paper``: ``||a_s - a_t||_2`` averaged over the batch (eq. 9); ``zagoruyko``: the AT
    code's mean squared difference. Maps of a pair must have equal spatial sizes; teacher detached."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)
        p: float = bounded(2.0, gt=0)
        mode: str = choice("paper", ATTENTION_MODES)

    requires = frozenset({"teacher", "features"})
    legacy = {"attention": "weight", "attention_layers": "layers", "attention_p": "p", "attention_mode": "mode"}

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.pairs = layer_pairs(cfg.layers, "attention")
        check_same_size(self.pairs, ctx, "attention")
        self.student_features = [s for s, _ in self.pairs]
        self.teacher_features = [t for _, t in self.pairs]

    def forward(self, s, t, batch):
        return sum(attention_loss(s.features[a], t.features[b].detach(), p=self.cfg.p, mode=self.cfg.mode)
                   for a, b in self.pairs)


def check_same_size(pairs, ctx, term: str) -> None:
    """Attention maps of each pair must have equal spatial sizes (ConfigError naming both)."""
    s_shapes = ctx.student_shapes([a for a, _ in pairs], term)
    t_shapes = ctx.teacher_shapes([b for _, b in pairs], term)
    for a, b in pairs:
        if tuple(s_shapes[a][1:]) != tuple(t_shapes[b][1:]):
            raise ConfigError(f"term {term!r}: attention maps need equal spatial sizes: student {a!r} is "
                              f"{tuple(s_shapes[a][1:])}, teacher {b!r} is {tuple(t_shapes[b][1:])}")
