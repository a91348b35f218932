"""What the relation terms (rkd, pkt, sp, cc) share: (student, teacher) feature pairs defaulting to
the main outputs, checked at build, and the features turned into per-example vectors.

Relation losses compare B x B (or B x B x B) structures of a batch, so a pair never needs equal
widths, channel counts or spatial sizes; only a feature with no per-example values is refused.
"""
from __future__ import annotations

from abc import abstractmethod

from typing import Any, ClassVar, Dict, List, Tuple

import torch

from kdlab.config import ConfigError
from kdlab.losses.adapters import to_vector
from kdlab.terms.base import OUTPUT, Outputs, Term, TermContext, layer_pairs, pick


class RelationalTerm(Term):
    """Base of the relation terms (not registered): builds ``self.pairs`` from ``cfg.layers``
    (default ``[[output, output]]``: the logits, or a generator's images), exposes their features,
    and stores the per-example shapes in ``self.shapes`` (one ``(student, teacher)`` per pair).

    Subclasses set :attr:`term` (their registry name) and implement :meth:`pair_loss`.

    Raises:
        ConfigError: bad ``layers`` entries, unknown features (names the term and the method), or a
            feature without per-example values (names both shapes and the term).
    """

    #: registry name, for error messages and ``objective.student.<term>`` paths
    term: ClassVar[str] = ""
    requires = frozenset({"teacher"})

    def __init__(self, cfg: Any, ctx: TermContext) -> None:
        super().__init__(cfg, ctx)
        self.pairs: List[Tuple[str, str]] = layer_pairs(cfg.layers, self.term, default=[(OUTPUT, OUTPUT)])
        self.expose(self.pairs)
        s_shapes: Dict[str, Tuple[int, ...]] = ctx.student_shapes([a for a, _ in self.pairs], self.term)
        t_shapes: Dict[str, Tuple[int, ...]] = ctx.teacher_shapes([b for _, b in self.pairs], self.term)
        self.shapes = [(tuple(s_shapes[a]), tuple(t_shapes[b])) for a, b in self.pairs]
        for (a, b), (s, t) in zip(self.pairs, self.shapes):
            if len(s) == 0 or len(t) == 0 or 0 in s or 0 in t:
                raise ConfigError(f"term {self.term!r}: features need per-example values [B, ...]; student {a!r} "
                                  f"is {s}, teacher {b!r} is {t} per example")

    def vectors(self, o: Outputs, name: str) -> torch.Tensor:
        """Feature ``name`` of ``o`` as [B, D] (``cfg.pool``: ``avg`` or ``flatten`` maps)."""
        return to_vector(pick(o, name), self.cfg.pool)

    @abstractmethod
    def pair_loss(self, i: int, s: Outputs, t: Outputs) -> torch.Tensor:
        """The unweighted loss of pair ``i`` (``self.pairs[i]``)."""

    def forward(self, s: Outputs, t: Outputs, batch: Any) -> torch.Tensor:
        return sum(self.pair_loss(i, s, t) for i in range(len(self.pairs)))
