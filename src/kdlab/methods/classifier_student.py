"""The base of methods whose student is a classifier distilled from a frozen teacher (``distill``,
``jacobian``, ``lwf``): the teacher, the student, the objective of ``loss.terms`` and the step.

Not a method itself (no registration). One step on a batch:

``x <- x + input_noise * N(0, I)`` (optional explicit noise), then one forward of the teacher (only
when a term needs it, on ``batch.teacher_input``) and one of the student, each exposing the
features the terms asked for, then ``loss = sum_i weight_i * term_i`` and one optimizer step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from kdlab.config import ConfigError, bounded
from kdlab.data.batch import Batch
from kdlab.engine import load_network, network_identity
from kdlab.methods.base import Method, build_network, unwrap
from kdlab.terms import Outputs


@dataclass
class ClassifierStudentConfig:
    """``loss`` section: the terms of the student objective and explicit input noise."""

    terms: Dict[str, Any] = field(default_factory=lambda: {"ce": {"weight": 1.0}})  # kdlab list terms
    input_noise: float = bounded(0.0, ge=0)  # sigma of explicit Gaussian input noise (0 = off)


class ClassifierStudentMethod(Method):
    """Frozen teacher -> classifier student trained on the sum of the configured terms.

    Subclasses may override :meth:`build_teacher` and :meth:`build_student` (LwF: another label space,
    a two-headed student).

    Raises (at construction, before training):
        ConfigError: no terms with a weight > 0, a term the method cannot feed (see
            :func:`kdlab.terms.build_objective`).
        TeacherMismatchError: the teacher does not fit the evaluation data set.
    """

    export_name = "student"
    Config = ClassifierStudentConfig

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        teacher, self.teacher_path = self.build_teacher(cfg, spec)
        student = self.build_student(cfg, spec, teacher)
        objective = self.add_student("student", student, self.build_objective(self.term_context(student, teacher)))
        if not len(objective):
            raise ConfigError(f"loss.terms has no term with a weight > 0 ({dict(cfg.loss.terms)}); "
                              "set at least one, e.g. loss.terms.kd.weight=1 (kdlab list terms)")
        self.objective = objective
        self.add_frozen("teacher", teacher)
        self.input_noise = float(cfg.loss.input_noise)  # read once: a config read costs microseconds per step

    def build_teacher(self, cfg: Any, spec: Any) -> Tuple[nn.Module, str]:
        """(teacher, weights path) from ``teacher.checkpoint``, checked against the evaluation data set."""
        return load_network(cfg.teacher.checkpoint, spec, hint="teacher.checkpoint=runs/<teacher run>")

    def build_student(self, cfg: Any, spec: Any, teacher: nn.Module) -> nn.Module:
        """The student network (``cfg.model``, optionally initialised from ``model.checkpoint``)."""
        return build_network(cfg, spec)

    def forward_losses(self, batch: Batch) -> Tuple[Dict[str, torch.Tensor], Outputs, Optional[Outputs]]:
        """(weighted terms incl. ``loss``, student outputs, teacher outputs) for one batch, no step."""
        sigma = self.input_noise
        x = batch.x + sigma * torch.randn_like(batch.x) if sigma > 0 else batch.x
        x = self.objective.prepare_input(x, batch)
        t = self.objective.teacher_outputs(self.frozen["teacher"], x if batch.x_teacher is None else batch.x_teacher)
        s = self.players["student"](x)
        return self.student_terms("student", s, t, batch), s, t

    def losses(self, batch: Batch) -> Dict[str, torch.Tensor]:
        """The weighted terms for one batch (each already multiplied by its weight) and their sum ``loss``."""
        return self.forward_losses(batch)[0]

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        terms, s, t = self.forward_losses(batch)
        self.step_optimizer("student", terms["loss"])
        out = {k: v.detach() for k, v in terms.items()}
        out.update(self.update_terms("student", s, t, batch))
        return out

    def eval_model(self) -> nn.Module:
        return unwrap(self.players["student"]).net

    def summary_extra(self) -> Dict[str, Any]:
        return {"teacher": network_identity(self.frozen["teacher"], self.teacher_path)}
