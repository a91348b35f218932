"""Logit matching (Ba & Caruana 2014; "match activations" of Srinivas & Fleuret 2018, sec. 10.2)."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import choice
from kdlab.losses import LOGIT_MODES, logit_matching
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("logits")
class LogitsTerm(Term):
    """Logit matching (Ba & Caruana 2014): squared error between student and teacher logits.

    ``paper``: ``(1/B) sum_b ||z_s - z_t||^2`` (sum
    over classes); ``mse``: the elementwise mean. Teacher logits detached (:func:`kdlab.losses.logit_matching`)."""

    @dataclass
    class Config(TermConfig):
        mode: str = choice("paper", LOGIT_MODES)

    requires = frozenset({"teacher", "logits"})
    legacy = {"logits": "weight", "logits_mode": "mode"}

    def forward(self, s, t, batch):
        return logit_matching(s.out, t.out.detach(), mode=self.cfg.mode)
