"""Relational KD (Park et al. 2019): Huber losses between normalised distances and angles of a batch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from kdlab.config import ConfigError, bounded, choice
from kdlab.losses.adapters import POOLS
from kdlab.losses.rkd import RKD_ANGLE_WEIGHT, RKD_DISTANCE_WEIGHT, rkd_loss
from kdlab.terms.base import TERMS, TermConfig
from kdlab.terms.relational import RelationalTerm


@TERMS.register("rkd")
class RKDTerm(RelationalTerm):
    """Relational KD over ``layers`` pairs (Park et al., CVPR 2019, eqs. 3-8): ``w_D L_D + w_A L_A``.

    ``L_D``: Huber (delta 1) between the teacher's and the student's pairwise distances, each
    normalised by its mean over the off-diagonal pairs; ``L_A``: Huber between the cosines of the
    angles of all triplets. Means over B^2 and B^3 entries, weights 25 and 50 as RepDistiller (the
    paper: 1 and 2); features as vectors (``pool``: ``flatten`` as the reference code, or ``avg``);
    summed over pairs; teacher detached (:func:`kdlab.losses.rkd.rkd_loss`)."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [[student feature, teacher feature], ...]; [] = outputs
        distance_weight: float = bounded(RKD_DISTANCE_WEIGHT, ge=0)
        angle_weight: float = bounded(RKD_ANGLE_WEIGHT, ge=0)
        pool: str = choice("flatten", POOLS)

    term = "rkd"

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        if cfg.distance_weight == 0 and cfg.angle_weight == 0:
            raise ConfigError("objective.student.rkd: distance_weight and angle_weight are both 0; set one > 0 "
                              "(or objective.student.rkd.weight: 0 to turn the term off)")

    def pair_loss(self, i, s, t):
        a, b = self.pairs[i]
        return rkd_loss(self.vectors(s, a), self.vectors(t, b), self.cfg.distance_weight, self.cfg.angle_weight)
