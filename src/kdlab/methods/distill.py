"""Distillation of a student from a frozen teacher with a weighted sum of classic losses.

``loss = ce * CE(z_s, y) + kd * KD_T(z_s, z_t) + logits * ||z_s - z_t||^2
        + hints * sum_l Hint_l(F_s^l, F_t^l) + attention * sum_l AT(F_s^l, F_t^l)``

with the losses of :mod:`kdlab.losses` (Hinton et al. 2015 KD with T^2 scaling; Ba & Caruana 2014
logit matching = "match activations" of Srinivas & Fleuret 2018 sec. 10.2; FitNets hints,
Romero et al. 2015; attention transfer, Zagoruyko & Komodakis 2017 = Srinivas & Fleuret eq. 8-9).
Every weight is a config key; a weight of 0 skips the term and its computation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from kdlab.engine import file_sha256, load_classifier, resolve_weights
from kdlab.losses import HintLoss, attention_loss, cross_entropy, kd_loss, logit_matching
from kdlab.methods.base import METHODS, Method, build_network, unwrap
from kdlab.models import extract_features, feature_shapes


class TeacherMismatchError(ValueError):
    """Teacher and student (or data set) disagree on classes, channels or image size."""


def load_teacher(checkpoint: Any, spec: Any) -> Tuple[nn.Module, str]:
    """Load the teacher named by ``teacher.checkpoint`` and check it fits the data set.

    Returns:
        (teacher in eval mode, resolved weights path).

    Raises:
        ValueError: no checkpoint configured.
        FileNotFoundError: the path does not exist.
        TeacherMismatchError: classes, channels or image size differ from the data set's.
    """
    if not checkpoint:
        raise ValueError("this method needs a trained teacher: set teacher.checkpoint=runs/<teacher run>")
    path = resolve_weights(checkpoint)
    teacher = load_classifier(path)
    got = (teacher.num_classes, teacher.in_channels, teacher.image_size)
    want = (spec.num_classes, spec.in_channels, spec.image_size)
    if got != want:
        raise TeacherMismatchError(
            f"teacher {str(path)!r} expects (classes, channels, image size) = {got}, but data set "
            f"{spec.name!r} gives {want}"
        )
    return teacher, str(path)


class DistillStudent(nn.Module):
    """The student player: the network plus the FitNets hint regressors it trains with.

    ``forward(x) -> (logits [B,K], {feature name: tensor})`` in one pass of the network.
    """

    def __init__(self, net: nn.Module, feature_names: Sequence[str], hint_losses: Sequence[nn.Module]) -> None:
        super().__init__()
        self.net = net
        self.feature_names = list(dict.fromkeys(feature_names))
        self.hints = nn.ModuleList(hint_losses)

    def forward(self, x: torch.Tensor):
        if not self.feature_names:
            return self.net(x), {}
        return extract_features(self.net, x, self.feature_names)


def _pairs(layers: Sequence[Sequence[str]], key: str) -> List[Tuple[str, str]]:
    out = []
    for item in layers:
        if len(item) != 2:
            raise ValueError(f"loss.{key} entries are [student feature, teacher feature]; got {list(item)}")
        out.append((str(item[0]), str(item[1])))
    return out


@METHODS.register("distill")
class Distill(Method):
    """Classic distillation: CE + KD + logit matching + FitNets hints + attention transfer."""

    export_name = "student"

    @dataclass
    class Config:
        """``loss`` section: one weight per term (0 = off) and the terms' settings."""

        ce: float = 1.0
        kd: float = 0.0
        temperature: float = 4.0
        logits: float = 0.0
        logits_mode: str = "paper"  # paper: squared L2 over classes, mean over batch | mse: elementwise mean
        hints: float = 0.0
        hint_layers: List[List[str]] = field(default_factory=list)  # [[student feature, teacher feature], ...]
        attention: float = 0.0
        attention_layers: List[List[str]] = field(default_factory=list)
        attention_p: float = 2.0
        attention_mode: str = "paper"  # paper: eq. 9 | zagoruyko: the AT code's mean squared error

    def __init__(self, cfg: Any, spec: Any) -> None:
        super().__init__(cfg, spec)
        lc = cfg.loss
        weights = {"ce": lc.ce, "kd": lc.kd, "logits": lc.logits, "hints": lc.hints, "attention": lc.attention}
        for k, w in weights.items():
            if w < 0:
                raise ValueError(f"loss.{k} = {w}: loss weights must be >= 0")
        if not any(w > 0 for w in weights.values()):
            raise ValueError(f"all loss weights are 0 ({weights}); set at least one of loss.ce/kd/logits/hints/attention")
        if lc.kd > 0 and lc.temperature <= 0:
            raise ValueError(f"loss.temperature = {lc.temperature} must be > 0")
        if lc.logits_mode not in ("paper", "mse"):
            raise ValueError(f"loss.logits_mode = {lc.logits_mode!r}; accepted: paper, mse")
        if lc.attention_mode not in ("paper", "zagoruyko"):
            raise ValueError(f"loss.attention_mode = {lc.attention_mode!r}; accepted: paper, zagoruyko")
        self.hint_pairs = _pairs(lc.hint_layers, "hint_layers") if lc.hints > 0 else []
        self.at_pairs = _pairs(lc.attention_layers, "attention_layers") if lc.attention > 0 else []
        if lc.hints > 0 and not self.hint_pairs:
            raise ValueError("loss.hints > 0 needs loss.hint_layers: [[student feature, teacher feature], ...]")
        if lc.attention > 0 and not self.at_pairs:
            raise ValueError("loss.attention > 0 needs loss.attention_layers: [[student feature, teacher feature], ...]")

        teacher, self.teacher_path = load_teacher(cfg.teacher.checkpoint, spec)
        student = build_network(cfg, spec)
        s_names = [s for s, _ in self.hint_pairs + self.at_pairs]
        t_names = [t for _, t in self.hint_pairs + self.at_pairs]
        s_shapes = feature_shapes(student, s_names) if s_names else {}
        t_shapes = feature_shapes(teacher, t_names) if t_names else {}
        for s, t in self.at_pairs:
            if tuple(s_shapes[s][1:]) != tuple(t_shapes[t][1:]):
                raise ValueError(
                    f"attention transfer needs equal spatial sizes: student {s!r} is {tuple(s_shapes[s][1:])}, "
                    f"teacher {t!r} is {tuple(t_shapes[t][1:])}"
                )
        hint_losses = [HintLoss.from_shapes(s_shapes[s], t_shapes[t]) for s, t in self.hint_pairs]
        self.t_names = list(dict.fromkeys(t_names))
        # CE-only runs (the no-teacher baseline) skip the teacher's forward pass
        self.uses_teacher = lc.kd > 0 or lc.logits > 0 or bool(self.t_names)
        self.add_player("student", DistillStudent(student, s_names, hint_losses))
        self.add_frozen("teacher", teacher)

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor):
        teacher = self.frozen["teacher"]
        if not self.t_names:
            return teacher(x), {}
        return extract_features(teacher, x, self.t_names)

    def losses(self, x: torch.Tensor, y: torch.Tensor, x_teacher: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """The weighted terms for one batch (each entry already multiplied by its weight) and ``loss``.

        ``x_teacher``: the teacher's (privileged) input when it differs from the student's ``x``.
        """
        lc = self.cfg.loss
        xt = x if x_teacher is None else x_teacher
        t_logits, t_feats = self.teacher_forward(xt) if self.uses_teacher else (None, {})
        s_logits, s_feats = self.players["student"](x)
        terms: Dict[str, torch.Tensor] = {}
        if lc.ce > 0:
            terms["ce"] = lc.ce * cross_entropy(s_logits, y)
        if lc.kd > 0:
            terms["kd"] = lc.kd * kd_loss(s_logits, t_logits, lc.temperature)
        if lc.logits > 0:
            terms["logits"] = lc.logits * logit_matching(s_logits, t_logits, mode=lc.logits_mode)
        if self.hint_pairs:
            hints = unwrap(self.players["student"]).hints
            terms["hints"] = lc.hints * sum(h(s_feats[s], t_feats[t]) for h, (s, t) in zip(hints, self.hint_pairs))
        if self.at_pairs:
            terms["attention"] = lc.attention * sum(
                attention_loss(s_feats[s], t_feats[t], p=lc.attention_p, mode=lc.attention_mode)
                for s, t in self.at_pairs
            )
        terms["loss"] = sum(terms.values())
        return terms

    def training_step(self, batch, step: int) -> Dict[str, torch.Tensor]:
        x, y = batch[0], batch[1]
        terms = self.losses(x, y, batch[2] if len(batch) > 2 else None)  # 3rd entry: privileged input
        self.step_optimizer("student", terms["loss"])
        return {k: v.detach() for k, v in terms.items()}

    def eval_model(self) -> nn.Module:
        return unwrap(self.players["student"]).net

    def summary_extra(self) -> Dict[str, Any]:
        teacher = self.frozen["teacher"]
        return {
            "teacher": {
                "name": teacher.arch,
                "checkpoint": self.teacher_path,
                "sha256": file_sha256(self.teacher_path),
            }
        }
