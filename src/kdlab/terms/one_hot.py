"""DAFL's one-hot loss (eq. 5): ``L_oh = (1/B) sum_i CE(z_t^i, y^i)``, the teacher's cross entropy against
``y`` = its own argmax (``targets: argmax``: DAFL, Fast-Datafree / CMI's generative synthesizer, MosaicKD's
data-free code) or labels drawn uniformly per batch (``targets: random``: DeepInversion's image
optimisation). Makes images the teacher classifies confidently."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.config import choice
from kdlab.losses.datafree import one_hot_loss
from kdlab.ranks import rank_rows
from kdlab.terms.base import TERMS, Term, TermConfig

TARGETS = ("argmax", "random")


@TERMS.register("one_hot")
class OneHotTerm(Term):
    """CE of the teacher's logits on the generator's images against its argmax or random labels
    (:func:`kdlab.losses.datafree.one_hot_loss`). Scalar >= 0 (nats)."""

    @dataclass
    class Config(TermConfig):
        targets: str = choice("argmax", TARGETS)

    requires = frozenset({"teacher"})
    roles = frozenset({"generator"})

    def forward(self, s, t, batch):
        y = None if self.cfg.targets == "argmax" else rank_rows(
            lambda n: torch.randint(0, t.out.shape[1], (n,), device=t.out.device), t.out.shape[0])
        return one_hot_loss(t.out, y)
