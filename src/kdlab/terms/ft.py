"""Factor transfer (Kim et al. 2018, eqs. 1-3): paraphraser (own player), translator (student), factor loss."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import torch
from torch import nn

from kdlab.config import ConfigError, bounded, choice
from kdlab.losses.ft import FT_NORMS, Paraphraser, Paraphrasers, Translator, ft_loss
from kdlab.terms._feature_maps import map_shapes
from kdlab.terms.base import TERMS, Term, TermConfig, layer_pairs, pick


@TERMS.register("ft")
class FTTerm(Term):
    """Factor transfer over ``layers`` pairs (student, teacher) (Kim et al. 2018, eqs. 1-3), summed.

    Per pair a paraphraser (teacher side: conv encoder ``C_t -> m = floor(rate * C_t)`` channels and a
    decoder back; :class:`kdlab.losses.ft.Paraphraser`) gives the teacher factor ``F_t``, a translator
    (student side, a submodule trained by the student optimizer) gives ``F_s``; the term is ``mean_batch
    || F_t/||F_t||_2 - F_s/||F_s||_2 ||_p`` (eq. 3, p = 1 default). The paraphraser is the term's own
    player ``paraphraser`` (optimizer: the run's ``optim``): for the first ``paraphraser_steps`` student
    steps :meth:`update` trains it on the reconstruction ``MSE(P(t), t)`` of the teacher feature (eq. 1)
    and the student term is 0 (a zero that keeps the graph); afterwards it is fixed (``F_t`` computed
    without gradient). ``paraphraser_steps: 0`` (default) = no pre-training: a fixed random paraphraser
    (part of the student's state, no gradients). With pre-training the paraphraser is not a submodule of
    the term (as VEM's EBM), so the student's DDP wrapper never holds parameters the student's loss does
    not reach. The step count is a buffer (checkpointed with the student). Teacher detached."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [[student map, teacher map], ...]
        rate: float = bounded(0.5, gt=0)  # factor rate k: the factor has floor(k * C_t) channels (at least 1)
        p: int = choice(1, FT_NORMS)  # the norm of eq. 3
        paraphraser_steps: int = bounded(0, ge=0)  # student steps spent pre-training the paraphraser (term = 0)

    requires = frozenset({"teacher", "features"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.pairs = layer_pairs(cfg.layers, "ft")
        shapes = map_shapes(self.pairs, ctx, "ft")
        translators = []
        for (a, b), (s, t) in zip(self.pairs, shapes):
            try:
                translators.append(Translator(s, t, cfg.rate))
            except ValueError as exc:
                raise ConfigError(f"term 'ft': student {a!r} {s} and teacher {b!r} {t}: {exc}") from None
        self.translators = nn.ModuleList(translators)
        paraphrasers = Paraphrasers(Paraphraser(t[0], cfg.rate) for _, t in shapes)
        if int(cfg.paraphraser_steps) > 0:
            # a player of its own, not a submodule: the student's optimizer and DDP wrapper never hold it
            # (under DDP, parameters without gradients in the student's wrapper stop the run)
            object.__setattr__(self, "paraphrasers", paraphrasers)
        else:  # fixed random paraphraser: part of the student's state, without gradients
            self.paraphrasers = paraphrasers.requires_grad_(False)
        self.register_buffer("paraphraser_done", torch.zeros((), dtype=torch.long))
        self.expose(self.pairs)

    def pretraining(self) -> bool:
        """True while the paraphraser is still being pre-trained (the student term is 0)."""
        return int(self.paraphraser_done) < int(self.cfg.paraphraser_steps)

    def players(self):
        return {"paraphraser": (self.paraphrasers, None)} if int(self.cfg.paraphraser_steps) > 0 else {}

    def forward(self, s, t, batch):
        if self.pretraining():
            # a zero connected to the student's graph, so that a run whose only term is ft can still step;
            # the translators' parameters too, so that DDP sees every parameter of the student used
            # (they get zero gradients: with weight decay they decay during these steps)
            return (sum(pick(s, a).sum() for a, _ in self.pairs)
                    + sum(p.sum() for p in self.translators.parameters())) * 0.0
        total = 0.0
        for tr, para, (a, b) in zip(self.translators, self.paraphrasers, self.pairs):
            with torch.no_grad():  # the paraphraser is fixed while the student learns
                f_t = para(pick(t, b).detach())
            total = total + ft_loss(tr(pick(s, a)), f_t, p=int(self.cfg.p))
        return total

    def update(self, s, t, batch, step):
        if not self.pretraining():
            return {}
        with torch.enable_grad():  # through the player's wrapper: under DDP its gradients are averaged
            loss = self.wrapped("paraphraser")([pick(t, b) for _, b in self.pairs])
        step("paraphraser", loss)
        self.paraphraser_done += 1
        return {"paraphraser_rec": loss.detach()}
