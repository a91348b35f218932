"""Probabilistic knowledge transfer (Passalis & Tefas 2018): KL between cosine-kernel conditionals."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from kdlab.config import choice
from kdlab.losses.adapters import POOLS
from kdlab.losses.pkt import pkt_loss
from kdlab.terms.base import TERMS, TermConfig
from kdlab.terms.relational import RelationalTerm


@TERMS.register("pkt")
class PKTTerm(RelationalTerm):
    """PKT over ``layers`` pairs (Passalis & Tefas, ECCV 2018, section 3): ``KL(P_t || P_s)``.

    ``P_ij = K_ij / sum_k K_ik`` with the cosine kernel ``K = (cos + 1) / 2`` over the batch; the
    reference code's conventions (diagonal kept, eps 1e-7 in the norms and the log, mean over the
    B^2 entries; RepDistiller weights it by 3e4); features as vectors (``pool``); summed over pairs;
    teacher detached (:func:`kdlab.losses.pkt.pkt_loss`)."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [[student feature, teacher feature], ...]; [] = outputs
        pool: str = choice("flatten", POOLS)

    term = "pkt"

    def pair_loss(self, i, s, t):
        a, b = self.pairs[i]
        return pkt_loss(self.vectors(s, a), self.vectors(t, b))
