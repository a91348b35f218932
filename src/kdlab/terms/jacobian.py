"""Output-Jacobian matching (Srinivas & Fleuret 2018, Prop. 1 and eq. 2, selections of sec. 4.1)."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import ConfigError, bounded, choice
from kdlab.losses import JACOBIAN_LOSSES, SELECTIONS, output_jacobian_term
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("jacobian")
class JacobianTerm(Term):
    """Output-Jacobian matching (Srinivas & Fleuret 2018, Prop. 1 / eq. 2).

    Match the input gradients of selected outputs (``select``: full | label | top, sec. 4.1).
    ``form = se``: squared error of the Jacobians on logits (Prop. 1); ``ce``: eq. 2 on
    ``softmax(logits / temperature)``; ``normalize``: unit-normalise each Jacobian first.
    Teacher and student see one input leaf; the teacher's gradients carry no graph
    (:func:`kdlab.losses.output_jacobian_term`). Costs one extra backward per selected output."""

    @dataclass
    class Config(TermConfig):
        select: str = choice("top", SELECTIONS)
        form: str = choice("se", JACOBIAN_LOSSES)
        temperature: float = bounded(1.0, gt=0)
        normalize: bool = False

    requires = frozenset({"teacher", "logits", "input_grad"})
    legacy = {"jacobian": "weight", "jacobian_select": "select", "jacobian_loss": "form",
              "jacobian_normalize": "normalize"}

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        if cfg.select == "label" and "labels" not in ctx.provides:
            raise ConfigError("loss.terms.jacobian.select = 'label' needs labelled transfer data; use select=top")

    def forward(self, s, t, batch):
        c = self.cfg
        labels = batch.y if c.select == "label" else None
        return output_jacobian_term(s.out, t.out, s.x, c.select, labels, c.form, c.temperature, c.normalize)
