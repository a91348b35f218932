"""Channel similarity (inter-channel correlation, ICKD; torchdistill ``ChSimLoss``) over feature-map pairs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from torch import nn

from kdlab.config import ConfigError, choice
from kdlab.losses.adapters import ConvRegressor
from kdlab.losses.chsim import CHSIM_NORMS, chsim_loss
from kdlab.terms._feature_maps import map_shapes
from kdlab.terms.base import TERMS, Term, TermConfig, layer_pairs, pick


@TERMS.register("chsim")
class ChSimTerm(Term):
    """Inter-channel correlation matching over ``layers`` pairs (student, teacher), summed
    (:func:`kdlab.losses.chsim.chsim_loss`; Liu et al., ICCV 2021).

    ``embed: true`` (default, as ICKD's ``Embed`` and torchdistill's ``Student4ICKD``) passes the student map
    through a 1x1 conv (no bias) + BN to the teacher's channel count, trained with the student
    (:class:`kdlab.losses.adapters.ConvRegressor`); ``embed: false`` compares the maps directly and needs
    equal channel counts. Spatial sizes must be equal. ``norm``: torchdistill's divisor ``C B^2`` (default) or
    ICKD's ``C B``. Teacher detached.

    Raises (at construction): ConfigError: maps of different spatial sizes; ``embed: false`` with different
    channel counts (names both shapes)."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [[student map, teacher map], ...]
        embed: bool = True  # 1x1 conv + BN on the student map (ICKD's Embed)
        norm: str = choice("torchdistill", CHSIM_NORMS)

    requires = frozenset({"teacher", "features"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.pairs = layer_pairs(cfg.layers, "chsim")
        shapes = map_shapes(self.pairs, ctx, "chsim", same_size=True)
        if not cfg.embed:
            for (a, b), (s, t) in zip(self.pairs, shapes):
                if s[0] != t[0]:
                    raise ConfigError(f"objective.student.chsim.embed = false needs equal channel counts: student {a!r} "
                                      f"is {s}, teacher {b!r} is {t}; set embed: true")
        self.embeds = nn.ModuleList(ConvRegressor(s, t) if cfg.embed else nn.Identity() for s, t in shapes)
        self.expose(self.pairs)

    def forward(self, s, t, batch):
        return sum(chsim_loss(e(pick(s, a)), pick(t, b), self.cfg.norm) for e, (a, b) in zip(self.embeds, self.pairs))
