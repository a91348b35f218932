"""Distillation of a student from a frozen teacher with a weighted sum of composable losses.

``loss = ce * CE(z_s, y) + kd * KD_T(z_s, z_t) + logits * ||z_s - z_t||^2
        + hints * sum_l Hint_l(F_s^l, F_t^l) + attention * sum_l AT(F_s^l, F_t^l)
        + jacobian * J(z_s, z_t; x) + attention_jacobian * sum_l AJ(F_s^l, F_t^l; x)``

with the losses of :mod:`kdlab.losses` (Hinton et al. 2015 KD with T^2 scaling; Ba & Caruana 2014
logit matching = "match activations" of Srinivas & Fleuret 2018 sec. 10.2; FitNets hints,
Romero et al. 2015; attention transfer, Zagoruyko & Komodakis 2017 = Srinivas & Fleuret eq. 8-9;
output-Jacobian matching, Srinivas & Fleuret Prop. 1 / eq. 2 with the selections of sec. 4.1;
attention-map Jacobians, their eq. 10). Every weight is a config key; a weight of 0 skips the term
and its computation. ``input_noise > 0`` trains on ``x + sigma * N(0, I)`` (explicit noise, the
left-hand side of Prop. 1). The ``jacobian`` method (:mod:`kdlab.methods.jacobian`) is this game
with the paper's defaults; ``lwf`` reuses it through the ``build_*``/``split_student_outputs`` hooks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from kdlab.engine import file_sha256, load_classifier, resolve_weights
from kdlab.losses import (
    SELECTIONS,
    HintLoss,
    attention_jacobian_loss,
    attention_loss,
    attention_pool_window,
    check_sigma,
    cross_entropy,
    kd_loss,
    logit_matching,
    output_jacobian_term,
)
from kdlab.losses.jacobian import JACOBIAN_LOSSES
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
    """Distillation with composable terms: CE, KD, logits, hints, attention maps, Jacobians.

    The terms are cross entropy, Hinton KD, logit matching, FitNets hints, attention transfer,
    output-Jacobian matching and attention-map Jacobians; each weight 0 = off (module docstring).
    """

    export_name = "student"

    @dataclass
    class Config:
        """``loss`` section: one weight per term (0 = off) and the terms' settings."""

        ce: float = 1.0
        kd: float = 0.0
        temperature: float = 4.0  # KD's T; also the softmax T of jacobian_loss = ce (eq. 2)
        logits: float = 0.0
        logits_mode: str = "paper"  # paper: squared L2 over classes, mean over batch | mse: elementwise mean
        hints: float = 0.0
        hint_layers: List[List[str]] = field(default_factory=list)  # [[student feature, teacher feature], ...]
        attention: float = 0.0
        attention_layers: List[List[str]] = field(default_factory=list)
        attention_p: float = 2.0
        attention_mode: str = "paper"  # paper: eq. 9 | zagoruyko: the AT code's mean squared error
        jacobian: float = 0.0  # match output Jacobians (Prop. 1 / eq. 2)
        jacobian_select: str = "top"  # full | label | top (section 4.1)
        jacobian_loss: str = "se"  # se: Prop. 1 squared error | ce: eq. 2 on softmax(logits / temperature)
        jacobian_normalize: bool = False  # unit-normalise each Jacobian first (eq. 10 style)
        attention_jacobian: float = 0.0  # match Jacobians of attention maps (eq. 10)
        attention_jacobian_layers: List[List[str]] = field(default_factory=list)
        attention_pool: int = 5  # window = feature size / k; 1 = global ("Full"), 0 = none (Table 5)
        input_noise: float = 0.0  # sigma of explicit Gaussian input noise (0 = off)

    WEIGHTS = ("ce", "kd", "logits", "hints", "attention", "jacobian", "attention_jacobian")

    def __init__(self, cfg: Any, spec: Any) -> None:
        super().__init__(cfg, spec)
        lc = cfg.loss
        self.check_config(lc)
        pair = lambda w, key: _pairs(getattr(lc, key), key) if getattr(lc, w) > 0 else []  # noqa: E731
        self.hint_pairs = pair("hints", "hint_layers")
        self.at_pairs = pair("attention", "attention_layers")
        self.aj_pairs = pair("attention_jacobian", "attention_jacobian_layers")
        for w, key, pairs in (("hints", "hint_layers", self.hint_pairs), ("attention", "attention_layers", self.at_pairs),
                              ("attention_jacobian", "attention_jacobian_layers", self.aj_pairs)):
            if getattr(lc, w) > 0 and not pairs:
                raise ValueError(f"loss.{w} > 0 needs loss.{key}: [[student feature, teacher feature], ...]")

        teacher, self.teacher_path = self.build_teacher(cfg, spec)
        student = self.build_student(cfg, spec, teacher)
        pairs = self.hint_pairs + self.at_pairs + self.aj_pairs
        s_names = [s for s, _ in pairs]
        t_names = [t for _, t in pairs]
        s_shapes = feature_shapes(student, s_names) if s_names else {}
        t_shapes = feature_shapes(teacher, t_names) if t_names else {}
        for s, t in self.at_pairs + self.aj_pairs:
            if tuple(s_shapes[s][1:]) != tuple(t_shapes[t][1:]):
                raise ValueError(
                    f"attention maps need equal spatial sizes: student {s!r} is {tuple(s_shapes[s][1:])}, "
                    f"teacher {t!r} is {tuple(t_shapes[t][1:])}"
                )
        hint_losses = [HintLoss.from_shapes(s_shapes[s], t_shapes[t]) for s, t in self.hint_pairs]
        self.t_names = list(dict.fromkeys(t_names))
        # CE-only runs (the no-teacher baseline) skip the teacher's forward pass
        self.uses_teacher = lc.kd > 0 or lc.logits > 0 or lc.jacobian > 0 or bool(self.t_names)
        self.needs_input_grad = lc.jacobian > 0 or lc.attention_jacobian > 0
        self.add_player("student", DistillStudent(student, s_names, hint_losses))
        self.add_frozen("teacher", teacher)

    @classmethod
    def check_config(cls, lc: Any) -> None:
        """Validate the ``loss`` section. Raises ValueError naming the key and the accepted values."""
        weights = {k: getattr(lc, k) for k in cls.WEIGHTS}
        for k, w in weights.items():
            if w < 0:
                raise ValueError(f"loss.{k} = {w}: loss weights must be >= 0")
        if not any(w > 0 for w in weights.values()):
            raise ValueError(f"all loss weights are 0 ({weights}); set at least one of loss.{'/'.join(cls.WEIGHTS)}")
        if lc.temperature <= 0:
            raise ValueError(f"loss.temperature = {lc.temperature} must be > 0")
        choices = {"logits_mode": ("paper", "mse"), "attention_mode": ("paper", "zagoruyko"),
                   "jacobian_select": SELECTIONS, "jacobian_loss": JACOBIAN_LOSSES}
        for key, accepted in choices.items():
            if getattr(lc, key) not in accepted:
                raise ValueError(f"loss.{key} = {getattr(lc, key)!r}; accepted: {', '.join(accepted)}")
        check_sigma(lc.input_noise, "loss.input_noise")
        try:
            attention_pool_window(7, lc.attention_pool)
        except ValueError as e:
            raise ValueError(f"{e} (loss.attention_pool)") from e

    # -- players (overridden by the LwF method) ---------------------------------------------------
    def build_teacher(self, cfg: Any, spec: Any) -> Tuple[nn.Module, str]:
        """(teacher, weights path) from ``teacher.checkpoint``, checked against the data set."""
        return load_teacher(cfg.teacher.checkpoint, spec)

    def build_student(self, cfg: Any, spec: Any, teacher: nn.Module) -> nn.Module:
        """The student network (``cfg.model``, optionally initialised from ``model.checkpoint``)."""
        return build_network(cfg, spec)

    def split_student_outputs(self, out: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        """(logits for CE with the labels, logits matched to the teacher's)."""
        return out, out

    # -- the loss ---------------------------------------------------------------------------------
    def teacher_forward(self, x: torch.Tensor):
        """Teacher logits and features; with a graph to ``x`` only when a Jacobian term needs it."""
        teacher = self.frozen["teacher"]
        with torch.set_grad_enabled(self.needs_input_grad and torch.is_grad_enabled()):
            if not self.t_names:
                return teacher(x), {}
            return extract_features(teacher, x, self.t_names)

    def losses(self, x: torch.Tensor, y: torch.Tensor, x_teacher: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """The weighted terms for one batch (each entry already multiplied by its weight) and ``loss``.

        ``x_teacher``: the teacher's own view of the batch (privileged input); default ``x``. Jacobian
        terms need one shared input, so they take the gradients with respect to ``x``.
        """
        lc = self.cfg.loss
        if lc.input_noise > 0:
            x = x + lc.input_noise * torch.randn_like(x)
        if self.needs_input_grad:
            if x_teacher is not None:
                raise ValueError("Jacobian terms need teacher and student to see the same input; "
                                 "drop data.privileged or loss.jacobian/attention_jacobian")
            x = x.detach().requires_grad_(True)
        t_in = x if x_teacher is None else x_teacher
        t_logits, t_feats = self.teacher_forward(t_in) if self.uses_teacher else (None, {})
        out, s_feats = self.players["student"](x)
        s_ce, s_match = self.split_student_outputs(out)
        terms: Dict[str, torch.Tensor] = {}
        if lc.ce > 0:
            terms["ce"] = lc.ce * cross_entropy(s_ce, y)
        if lc.kd > 0:
            terms["kd"] = lc.kd * kd_loss(s_match, t_logits, lc.temperature)
        if lc.logits > 0:
            terms["logits"] = lc.logits * logit_matching(s_match, t_logits.detach(), mode=lc.logits_mode)
        if self.hint_pairs:
            hints = unwrap(self.players["student"]).hints
            terms["hints"] = lc.hints * sum(h(s_feats[s], t_feats[t]) for h, (s, t) in zip(hints, self.hint_pairs))
        if self.at_pairs:
            terms["attention"] = lc.attention * sum(
                attention_loss(s_feats[s], t_feats[t].detach(), p=lc.attention_p, mode=lc.attention_mode)
                for s, t in self.at_pairs
            )
        if lc.jacobian > 0:
            labels = y if lc.jacobian_select == "label" else None
            terms["jacobian"] = lc.jacobian * output_jacobian_term(
                s_match, t_logits, x, lc.jacobian_select, labels, lc.jacobian_loss, lc.temperature, lc.jacobian_normalize
            )
        if self.aj_pairs:
            terms["attention_jacobian"] = lc.attention_jacobian * sum(
                attention_jacobian_loss(s_feats[s], t_feats[t], x, lc.attention_pool) for s, t in self.aj_pairs
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
