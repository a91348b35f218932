"""Similarity-preserving KD (Tung & Mori 2019): row-normalised batch Gram matrices matched."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from kdlab.losses.sp import sp_loss
from kdlab.terms.base import TERMS, TermConfig, pick
from kdlab.terms.relational import RelationalTerm


@TERMS.register("sp")
class SPTerm(RelationalTerm):
    """Similarity preservation over ``layers`` pairs (Tung & Mori, ICCV 2019, eqs. 1-3).

    ``G = normalize_rows(Q Q^T)`` of each feature flattened per example (``Q`` [B, C*H*W]);
    ``sum_pairs ||G_t - G_s||_F^2 / B^2``. Only B x B matrices meet, so channel counts and sizes may
    differ; teacher detached (:func:`kdlab.losses.sp.sp_loss`; RepDistiller weights it by 3000)."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [[student feature, teacher feature], ...]; [] = outputs

    term = "sp"

    def pair_loss(self, i, s, t):
        a, b = self.pairs[i]
        return sp_loss(pick(s, a), pick(t, b))
