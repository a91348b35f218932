"""Output-Jacobian matching (Srinivas & Fleuret 2018, Prop. 1 and eq. 2, selections of sec. 4.1)."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import ConfigError, choice, temperature_field
from kdlab.losses import JACOBIAN_LOSSES, SELECTIONS, select_classes, student_jacobian_match, teacher_output_jacobian
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("jacobian")
class JacobianTerm(Term):
    """Output-Jacobian matching (Srinivas & Fleuret 2018, Prop. 1 / eq. 2).

    Match the input gradients of selected outputs (``select``: full | label | top, sec. 4.1).
    ``form = se``: squared error of the Jacobians on logits (Prop. 1); ``ce``: eq. 2 on
    ``softmax(logits / temperature)``; ``normalize``: unit-normalise each Jacobian first.
    Teacher and student see one input leaf; the teacher's Jacobian (no graph) is derived right after
    its forward pass (:meth:`teacher_derived`, cacheable per example), the student's is matched to it
    (:func:`kdlab.losses.student_jacobian_match`; together :func:`kdlab.losses.output_jacobian_term`).
    Both are per-sample Jacobians: the teacher's of its eval-mode pass, a train-mode student's of its
    Jacobian pass (BatchNorm batch statistics held constant, :attr:`kdlab.terms.Outputs.for_jacobian`).
    Costs one extra backward per selected output (and, for a student with train-mode BatchNorm, one
    extra forward)."""

    @dataclass
    class Config(TermConfig):
        select: str = choice("top", SELECTIONS)
        form: str = choice("se", JACOBIAN_LOSSES)
        temperature: float = temperature_field(1.0)
        normalize: bool = False

    requires = frozenset({"teacher", "logits", "input_grad"})
    legacy = {"jacobian": "weight", "jacobian_select": "select", "jacobian_loss": "form",
              "jacobian_normalize": "normalize"}

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        if cfg.select == "label" and "labels" not in ctx.provides:
            raise ConfigError("objective.student.jacobian.select = 'label' needs labelled transfer data; use select=top")

    def _classes(self, t, batch):
        return select_classes(self.cfg.select, t.out.shape[1], batch.y if self.cfg.select == "label" else None, t.out)

    def teacher_derived(self, t, batch):
        c, tj = self.cfg, t.for_jacobian
        return {"jacobian": teacher_output_jacobian(tj.out, tj.x, self._classes(t, batch), c.form, c.temperature)}

    def forward(self, s, t, batch):
        c, sj = self.cfg, s.for_jacobian
        if s.out.shape != t.out.shape:
            raise ValueError(f"student logits {tuple(s.out.shape)} and teacher logits {tuple(t.out.shape)} differ")
        return student_jacobian_match(sj.out, self.from_teacher(t, "jacobian"), sj.x, self._classes(t, batch),
                                      c.form, c.temperature, c.normalize)
