"""The Jacobian-norm penalty of robust training (Srinivas & Fleuret 2018, Prop. 2 and eq. 3): the trained
network's own input gradients, penalised; the robust teachers of their Table 2 and, on a student, a
regulariser. ``form: se`` (Prop. 2, on the selected logits: ``select`` full | label | top) or ``ce``
(eq. 3: ``||grad_x log softmax(S(x))_y||^2`` for the label y). The weight is lambda (= sigma^2 of the
noise it stands for, Prop. 2)."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import ConfigError, choice
from kdlab.losses import PENALTY_FORMS, SELECTIONS, jacobian_norm_penalty
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("jacobian_penalty")
class JacobianPenaltyTerm(Term):
    """:func:`kdlab.losses.jacobian_norm_penalty` of the player's logits w.r.t. its input. On per-sample
    Jacobians: a network with train-mode BatchNorm takes them from its Jacobian pass (batch statistics held
    constant, :attr:`kdlab.terms.Outputs.for_jacobian`; one extra forward per step).

    Raises (at construction): ConfigError: ``form: ce`` or ``select: label`` without labelled transfer data.
    """

    @dataclass
    class Config(TermConfig):
        form: str = choice("se", PENALTY_FORMS)  # se: Prop. 2 on logits | ce: eq. 3
        select: str = choice("label", SELECTIONS)  # se form: full | label | top (section 4.1)

    requires = frozenset({"logits", "input_grad"})
    roles = frozenset({"student", "teacher"})

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        if (cfg.form == "ce" or cfg.select == "label") and "labels" not in ctx.provides:
            why = ctx.why_not.get("labels", "")
            raise ConfigError(f"objective.{ctx.role}.jacobian_penalty with form = {cfg.form!r}, select = {cfg.select!r} "
                              f"needs labels{': ' + why if why else ''}; use form=se select=top")

    def forward(self, s, t, batch):
        sj = s.for_jacobian
        needs_y = self.cfg.form == "ce" or self.cfg.select == "label"
        return jacobian_norm_penalty(sj.out, sj.x, batch.y if needs_y else None, form=self.cfg.form,
                                     select=self.cfg.select)
