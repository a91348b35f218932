"""Contrastive representation distillation (Tian et al. 2020, eqs. 10-19) as a term over feature pairs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from torch import nn

from kdlab.config import ConfigError, bounded, choice, temperature_field
from kdlab.losses.adapters import POOLS
from kdlab.losses.crd import CRD_FEAT_DIM, CRD_K, CRD_MOMENTUM, CRD_TEMPERATURE, CRDLoss
from kdlab.terms.base import OUTPUT, TERMS, Term, TermConfig, layer_pairs, pick


@TERMS.register("crd")
class CRDTerm(Term):
    """CRD (Tian et al. 2020, eqs. 10-19, NCE form): ``sum_pairs NCE(teacher anchor vs student memory) +
    NCE(student anchor vs teacher memory)``.

    Per ``layers`` pair (default ``[[output, output]]``: logits, or generator images; RepDistiller uses
    the penultimate feature, e.g. ``[[fc2, fc2]]``): linear embedding heads to ``feat_dim`` (L2-normalised,
    both trained by the student's optimizer), a momentum memory bank per side over the transfer set's
    N = ``transfer_size`` rows indexed by ``batch.index``, k uniform negatives, temperature tau and the
    partition function Z estimated from the first batch (:class:`kdlab.losses.crd.CRDLoss`; RepDistiller
    defaults feat_dim 128, k 16384, tau 0.07, momentum 0.5). Memories and Z are buffers of the student
    player (checkpointed and resumed). Teacher features detached. Generator students need
    ``players.latents=pool`` (each transfer row has a fixed z)."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [[student feature, teacher feature], ...]; [] = output
        feat_dim: int = bounded(CRD_FEAT_DIM, ge=1)  # embedding size (RepDistiller feat_dim)
        k: int = bounded(CRD_K, ge=1)  # negatives per anchor, <= transfer_size - 1 (RepDistiller nce_k)
        temperature: float = temperature_field(CRD_TEMPERATURE)  # tau (RepDistiller nce_t)
        momentum: float = bounded(CRD_MOMENTUM, ge=0, lt=1)  # memory update (RepDistiller nce_m)
        pool: str = choice("flatten", POOLS)  # maps -> vectors before the heads (RepDistiller: flatten)

    requires = frozenset({"teacher", "index"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        n = ctx.transfer_size
        if n is None:
            raise ConfigError(f"term 'crd' needs the transfer set's size for its memory bank; method {ctx.method!r} "
                              "was built without data")
        if cfg.k > n - 1:
            raise ConfigError(f"objective.student.crd.k = {cfg.k} negatives is more than the transfer set allows: "
                              f"k must be <= N - 1 = {n - 1} (N = {n} rows of the transfer set); lower objective.student.crd.k")
        self.pairs = layer_pairs(cfg.layers, "crd", default=[(OUTPUT, OUTPUT)])
        self.expose(self.pairs)
        s_shapes = ctx.student_shapes([a for a, _ in self.pairs], "crd")
        t_shapes = ctx.teacher_shapes([b for _, b in self.pairs], "crd")
        self.losses = nn.ModuleList(
            CRDLoss(s_shapes[a], t_shapes[b], n, k=int(cfg.k), feat_dim=int(cfg.feat_dim),
                    temperature=float(cfg.temperature), momentum=float(cfg.momentum), pool=cfg.pool)
            for a, b in self.pairs)

    def forward(self, s, t, batch):
        return sum(crd(pick(s, a), pick(t, b), batch.index) for crd, (a, b) in zip(self.losses, self.pairs))
