"""Transfer learning by LwF + Jacobian matching (Jacobian paper section 5, Table 3; Li & Hoiem 2016).

The teacher was trained on another data set / label space (the *source* task). The student has two
heads that share its pre-final layer (``loss.pre_final``, default the global-average-pooled
feature ``gap``): its own classifier for the *target* labels, trained with CE, and a linear
*source* head whose outputs are matched to the teacher's logits (LwF's activation matching), with
optional attention-map matching, output-Jacobian matching on the source head and attention-map
Jacobians -- all on target data only (section 5.1). The exported model is the target classifier.

``loss.init_from_teacher: true`` copies every teacher weight of matching name and shape into the
student (the paper's "CE on pre-trained student network (Oracle)" row when the architectures agree).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from kdlab.engine import file_sha256, load_classifier, resolve_weights
from kdlab.methods.base import METHODS
from kdlab.methods.distill import TeacherMismatchError
from kdlab.methods.jacobian import JacobianDistill
from kdlab.models import extract_features, feature_shapes


class LwFStudent(nn.Module):
    """Target network + a linear source head on its pre-final feature.

    ``forward(x) -> ((target logits [B, K_t], source logits [B, K_s]), {feature: tensor})``.
    """

    def __init__(self, net: nn.Module, source_classes: int, pre_final: str, feature_names: List[str],
                 hints: Optional[nn.ModuleList] = None) -> None:
        super().__init__()
        shape = feature_shapes(net, [pre_final])[pre_final]
        if len(shape) != 1:
            raise ValueError(
                f"loss.pre_final = {pre_final!r} must be a flat feature [B, C] (e.g. 'gap'); it has shape {shape}"
            )
        self.net = net
        self.pre_final = pre_final
        self.feature_names = list(dict.fromkeys(list(feature_names) + [pre_final]))
        self.source_head = nn.Linear(shape[0], source_classes)
        self.hints = hints if hints is not None else nn.ModuleList()

    def forward(self, x: torch.Tensor):
        logits, feats = extract_features(self.net, x, self.feature_names)
        return (logits, self.source_head(feats[self.pre_final])), feats


@METHODS.register("lwf")
class LwFTransfer(JacobianDistill):
    """LwF transfer (two heads) + attention maps + Jacobians, on target data only (Jacobian paper sec. 5)."""

    @dataclass
    class Config(JacobianDistill.Config):
        """``loss`` section: the :class:`JacobianDistill` terms, applied to the source head."""

        logits: float = 1.0  # LwF: match the teacher's activations on the source head
        pre_final: str = "gap"  # shared pre-final feature of the student
        init_from_teacher: bool = False  # the Oracle row: start from the teacher's weights

    def build_teacher(self, cfg: Any, spec: Any) -> Tuple[nn.Module, str]:
        if not cfg.teacher.checkpoint:
            raise ValueError("lwf needs a teacher trained on the source task: set teacher.checkpoint=runs/<teacher run>")
        path = resolve_weights(cfg.teacher.checkpoint)
        teacher = load_classifier(path)
        got, want = (teacher.in_channels, teacher.image_size), (spec.in_channels, spec.image_size)
        if got != want:
            raise TeacherMismatchError(
                f"teacher {str(path)!r} expects (channels, image size) = {got}, but data set {spec.name!r} gives {want}"
            )
        return teacher, str(path)

    def build_student(self, cfg: Any, spec: Any, teacher: nn.Module) -> nn.Module:
        net = super().build_student(cfg, spec, teacher)
        if cfg.loss.init_from_teacher:
            own = net.state_dict()
            copied = {k: v for k, v in teacher.state_dict().items() if k in own and own[k].shape == v.shape}
            if not copied:
                raise ValueError("loss.init_from_teacher: no teacher weight has a name and shape of the student's")
            net.load_state_dict(copied, strict=False)
            self.n_copied = len(copied)
        return net

    def __init__(self, cfg: Any, spec: Any) -> None:
        self.n_copied = 0
        super().__init__(cfg, spec)
        student = self.players.pop("student")
        self.optimizers.pop("student")
        self.schedulers.pop("student")
        teacher = self.frozen["teacher"]
        self.add_player(
            "student",
            LwFStudent(student.net, teacher.num_classes, cfg.loss.pre_final, student.feature_names, student.hints),
        )

    def split_student_outputs(self, logits: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        return logits[0], logits[1]

    def summary_extra(self) -> Dict[str, Any]:
        # not "teacher": its label space differs, so the default teacher test metrics do not apply
        teacher = self.frozen["teacher"]
        return {"source_teacher": {"name": teacher.arch, "num_classes": teacher.num_classes,
                                   "checkpoint": self.teacher_path, "sha256": file_sha256(self.teacher_path),
                                   "weights_copied": self.n_copied}}
