"""DAFL's activation loss (eq. 6): ``L_a = -(1/n) sum |f_t|`` over a teacher feature of the generator's
images (default: the penultimate features, the input of the teacher's classifier ``fc``), rewarding images
that excite it. ``reduction: mean`` (n = B * D, DAFL's code ``-features_T.abs().mean()``, the scale of its
weight 0.1) or ``batchmean`` (n = B, eq. 6 as printed)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kdlab.config import ConfigError, choice
from kdlab.features import FC_INPUT
from kdlab.losses.datafree import L1_REDUCTIONS, activation_loss
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("activation")
class ActivationTerm(Term):
    """Minus the mean absolute value of the teacher feature ``feature`` (:func:`kdlab.losses.datafree.activation_loss`).

    Raises (at construction): ConfigError: an unknown ``feature`` (lists the teacher's features), or an empty
    one for a teacher without a final linear layer ``fc`` (names its architecture).
    """

    @dataclass
    class Config(TermConfig):
        feature: str = ""  # a teacher feature or module path ('<path>:in' = its input); "" = the input of fc
        reduction: str = choice("mean", L1_REDUCTIONS)

    requires = frozenset({"teacher", "features"})
    roles = frozenset({"generator"})

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        name = str(cfg.feature)
        if not name:
            if not isinstance(getattr(ctx.teacher, "fc", None), nn.Linear):
                arch = getattr(ctx.teacher, "arch", type(ctx.teacher).__name__)
                raise ConfigError(f"term 'activation' takes the input of the teacher's final linear layer 'fc' by default; "
                                  f"the teacher {arch!r} has none: set objective.{ctx.role}.activation.feature to one of "
                                  "its features")
            name = FC_INPUT
        ctx.teacher_shapes([name], "activation")
        self.name = name
        self.teacher_features = [name]

    def forward(self, s, t, batch):
        return activation_loss(t.features[self.name], reduction=self.cfg.reduction)
