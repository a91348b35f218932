"""Jacobian matching distillation (Srinivas & Fleuret, ICML 2018), the composite loss of section 10.2.

``loss = alpha * CE + beta * match activations + gamma * match Jacobians``
``       + attention * match attention maps (eq. 9) + attention_jacobian * match attention Jacobians (eq. 10)``

with every weight in the ``loss`` section (0 = off). Every row of the paper's Table 1 is a recipe
(``kdlab list recipes``: ``jacobian_t1_*``). ``input_noise > 0`` trains on ``x + sigma * N(0, I)``
instead (explicit noise augmentation, the left-hand side of Prop. 1), for comparison with the
Jacobian term.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from kdlab.engine import file_sha256
from kdlab.losses import (
    SELECTIONS,
    attention_jacobian_loss,
    attention_loss,
    attention_pool_window,
    check_sigma,
    cross_entropy,
    logit_matching,
    output_jacobian_term,
)
from kdlab.losses.jacobian import JACOBIAN_LOSSES
from kdlab.methods.base import METHODS, Method, build_network, unwrap
from kdlab.methods.distill import _pairs, load_teacher
from kdlab.models import extract_features, feature_shapes


class JacobianStudent(nn.Module):
    """The student network; ``forward(x) -> (logits [B, K], {feature: tensor})`` in one pass."""

    def __init__(self, net: nn.Module, feature_names: List[str]) -> None:
        super().__init__()
        self.net = net
        self.feature_names = list(dict.fromkeys(feature_names))

    def forward(self, x: torch.Tensor):
        if not self.feature_names:
            return self.net(x), {}
        return extract_features(self.net, x, self.feature_names)


@METHODS.register("jacobian")
class JacobianDistill(Method):
    """Jacobian matching: alpha CE + beta logits + gamma Jacobians (+ attention maps and their Jacobians)."""

    export_name = "student"

    @dataclass
    class Config:
        """``loss`` section (section 10.2: alpha, beta, gamma are 1 or 0 in the paper's Table 1)."""

        ce: float = 1.0  # alpha: cross entropy with the labels
        logits: float = 0.0  # beta: match activations, (y_s - y_t)^2 on logits
        logits_mode: str = "paper"  # paper: squared L2 over classes, mean over batch | mse
        jacobian: float = 0.0  # gamma: match output Jacobians (Prop. 1 / eq. 2)
        jacobian_select: str = "top"  # full | label | top (section 4.1)
        jacobian_loss: str = "se"  # se: Prop. 1 squared error | ce: eq. 2 on softmax(logits / T)
        jacobian_normalize: bool = False  # unit-normalise each Jacobian first (eq. 10 style)
        temperature: float = 1.0  # for jacobian_loss = ce
        attention: float = 0.0  # match attention maps (eq. 9)
        attention_layers: List[List[str]] = field(default_factory=list)  # [[student, teacher], ...]
        attention_mode: str = "paper"
        attention_jacobian: float = 0.0  # match Jacobians of attention maps (eq. 10)
        attention_jacobian_layers: List[List[str]] = field(default_factory=list)
        attention_pool: int = 5  # window = feature size / k; 1 = global ("Full"), 0 = none (Table 5)
        input_noise: float = 0.0  # sigma of explicit Gaussian input noise (0 = off)

    def __init__(self, cfg: Any, spec: Any) -> None:
        super().__init__(cfg, spec)
        lc = cfg.loss
        weights = {"ce": lc.ce, "logits": lc.logits, "jacobian": lc.jacobian, "attention": lc.attention,
                   "attention_jacobian": lc.attention_jacobian}
        for k, w in weights.items():
            if w < 0:
                raise ValueError(f"loss.{k} = {w}: loss weights must be >= 0")
        if not any(w > 0 for w in weights.values()):
            raise ValueError(f"all loss weights are 0 ({weights}); set at least one")
        if lc.jacobian_select not in SELECTIONS:
            raise ValueError(f"loss.jacobian_select = {lc.jacobian_select!r}; accepted: {', '.join(SELECTIONS)}")
        if lc.jacobian_loss not in JACOBIAN_LOSSES:
            raise ValueError(f"loss.jacobian_loss = {lc.jacobian_loss!r}; accepted: {', '.join(JACOBIAN_LOSSES)}")
        if lc.temperature <= 0:
            raise ValueError(f"loss.temperature = {lc.temperature} must be > 0")
        if lc.logits_mode not in ("paper", "mse"):
            raise ValueError(f"loss.logits_mode = {lc.logits_mode!r}; accepted: paper, mse")
        if lc.attention_mode not in ("paper", "zagoruyko"):
            raise ValueError(f"loss.attention_mode = {lc.attention_mode!r}; accepted: paper, zagoruyko")
        try:
            check_sigma(lc.input_noise, "loss.input_noise")
            attention_pool_window(7, lc.attention_pool)
        except ValueError as e:
            raise ValueError(f"{e} (loss.attention_pool / loss.input_noise)") from e
        self.at_pairs = _pairs(lc.attention_layers, "attention_layers") if lc.attention > 0 else []
        self.aj_pairs = _pairs(lc.attention_jacobian_layers, "attention_jacobian_layers") if lc.attention_jacobian > 0 else []
        if lc.attention > 0 and not self.at_pairs:
            raise ValueError("loss.attention > 0 needs loss.attention_layers: [[student feature, teacher feature], ...]")
        if lc.attention_jacobian > 0 and not self.aj_pairs:
            raise ValueError(
                "loss.attention_jacobian > 0 needs loss.attention_jacobian_layers: [[student feature, teacher feature], ...]"
            )
        teacher, self.teacher_path = self.build_teacher(cfg, spec)
        student = self.build_student(cfg, spec, teacher)
        pairs = self.at_pairs + self.aj_pairs
        s_names = [s for s, _ in pairs]
        t_names = [t for _, t in pairs]
        s_shapes = feature_shapes(student, s_names) if s_names else {}
        t_shapes = feature_shapes(teacher, t_names) if t_names else {}
        for s, t in pairs:
            if tuple(s_shapes[s][1:]) != tuple(t_shapes[t][1:]):
                raise ValueError(
                    f"attention maps need equal spatial sizes: student {s!r} is {tuple(s_shapes[s][1:])}, "
                    f"teacher {t!r} is {tuple(t_shapes[t][1:])}"
                )
        self.t_names = list(dict.fromkeys(t_names))
        self.uses_teacher = lc.logits > 0 or lc.jacobian > 0 or bool(self.t_names)
        self.needs_input_grad = lc.jacobian > 0 or lc.attention_jacobian > 0
        self.add_player("student", JacobianStudent(student, s_names))
        self.add_frozen("teacher", teacher)

    # -- players (overridden by the LwF method) ---------------------------------------------------
    def build_teacher(self, cfg: Any, spec: Any) -> Tuple[nn.Module, str]:
        return load_teacher(cfg.teacher.checkpoint, spec)

    def build_student(self, cfg: Any, spec: Any, teacher: nn.Module) -> nn.Module:
        return build_network(cfg, spec)

    def split_student_outputs(self, logits: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        """(logits for CE with the labels, logits matched to the teacher's)."""
        return logits, logits

    # -- the loss ---------------------------------------------------------------------------------
    def losses(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Weighted terms for one batch (each already multiplied by its weight) and their sum ``loss``."""
        lc = self.cfg.loss
        if lc.input_noise > 0:
            x = x + lc.input_noise * torch.randn_like(x)
        x = x.detach().requires_grad_(self.needs_input_grad)
        teacher = self.frozen["teacher"]
        t_logits, t_feats = None, {}
        if self.uses_teacher:
            with torch.set_grad_enabled(self.needs_input_grad):
                if self.t_names:
                    t_logits, t_feats = extract_features(teacher, x, self.t_names)
                else:
                    t_logits = teacher(x)
        out, s_feats = self.players["student"](x)
        s_ce, s_match = self.split_student_outputs(out)
        terms: Dict[str, torch.Tensor] = {}
        if lc.ce > 0:
            terms["ce"] = lc.ce * cross_entropy(s_ce, y)
        if lc.logits > 0:
            terms["logits"] = lc.logits * logit_matching(s_match, t_logits.detach(), mode=lc.logits_mode)
        if lc.jacobian > 0:
            labels = y if lc.jacobian_select == "label" else None
            terms["jacobian"] = lc.jacobian * output_jacobian_term(
                s_match, t_logits, x, lc.jacobian_select, labels, lc.jacobian_loss, lc.temperature, lc.jacobian_normalize
            )
        if self.at_pairs:
            terms["attention"] = lc.attention * sum(
                attention_loss(s_feats[s], t_feats[t].detach(), mode=lc.attention_mode) for s, t in self.at_pairs
            )
        if self.aj_pairs:
            terms["attention_jacobian"] = lc.attention_jacobian * sum(
                attention_jacobian_loss(s_feats[s], t_feats[t], x, lc.attention_pool) for s, t in self.aj_pairs
            )
        terms["loss"] = sum(terms.values())
        return terms

    def training_step(self, batch, step: int) -> Dict[str, torch.Tensor]:
        x, y = batch
        terms = self.losses(x, y)
        self.step_optimizer("student", terms["loss"])
        return {k: v.detach() for k, v in terms.items()}

    def eval_model(self) -> nn.Module:
        return unwrap(self.players["student"]).net

    def summary_extra(self) -> Dict[str, Any]:
        teacher = self.frozen["teacher"]
        return {"teacher": {"name": teacher.arch, "checkpoint": self.teacher_path, "sha256": file_sha256(self.teacher_path)}}
