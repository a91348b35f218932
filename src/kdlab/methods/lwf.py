"""Transfer learning by LwF + Jacobian matching (Jacobian paper section 5, Table 3; Li & Hoiem 2016).

The teacher was trained on another data set / label space (the *source* task). The student has two
heads that share its pre-final layer (``players.pre_final``, default the global-average-pooled
feature ``gap``): its own classifier for the *target* labels, scored by the ``ce`` term, and a
linear *source* head whose outputs every teacher-matching term sees (LwF's activation matching
``logits``, and optionally attention maps, output Jacobians on the source head, attention-map
Jacobians), all on target data only (section 5.1). The exported model is the target classifier.
The ``jacobian_lwf`` recipe matches the source head by the squared error averaged over its logits
(``logits.mode: mse``; the recipe says why the sum over classes is not used at weight 10).

``players.init_from_teacher: true`` copies every teacher weight of matching name and shape into the
student (the paper's "CE on pre-trained student network (Oracle)" row when the architectures agree).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch
from torch import nn

from kdlab.config import ConfigError
from kdlab.engine import load_network, network_identity
from kdlab.games.base import METHODS
from kdlab.games.classifier_student import ClassifierStudentConfig, ClassifierStudentMethod
from kdlab.models import capture_features, feature_shapes


class LwFNet(nn.Module):
    """Target network + a linear source head on its pre-final feature.

    ``forward(x) -> (target logits [B, K_t], source logits [B, K_s])`` (a two-headed network: terms
    score the first against the labels and match the second to the teacher). Feature names are the
    target network's (``feature_layers`` is forwarded).
    """

    def __init__(self, net: nn.Module, source_classes: int, pre_final: str) -> None:
        super().__init__()
        shape = feature_shapes(net, [pre_final])[pre_final]
        if len(shape) != 1:
            raise ConfigError(
                f"players.pre_final = {pre_final!r} must be a flat feature [B, C] (e.g. 'gap'); it has shape {shape}")
        self.net = net
        self.pre_final = pre_final
        self.source_head = nn.Linear(shape[0], source_classes)
        self.feature_layers = {k: f"net.{v}" for k, v in getattr(net, "feature_layers", {}).items()}
        self.in_channels, self.image_size = net.in_channels, net.image_size

    def forward(self, x: torch.Tensor):
        with capture_features(self.net, [self.pre_final]) as feats:
            logits = self.net(x)
        return logits, self.source_head(feats[self.pre_final])


@METHODS.register("lwf")
class LwFTransfer(ClassifierStudentMethod):
    """LwF transfer (two heads) + attention maps + Jacobians, on target data only (Jacobian paper sec. 5)."""

    default_objective = {"student": {"ce": {"weight": 1.0}, "logits": {"weight": 1.0}}}

    @dataclass
    class Config(ClassifierStudentConfig):
        """``players`` section: the terms (teacher-matching terms act on the source head) and LwF's keys."""

        pre_final: str = "gap"  # shared pre-final feature of the student
        init_from_teacher: bool = False  # the Oracle row: start from the teacher's weights

    def build_teacher(self, cfg: Any, spec: Any) -> Tuple[nn.Module, str]:
        # another label space: only the input must fit
        return load_network(cfg.teacher.checkpoint, spec, check=("channels", "size"),
                            hint="teacher.checkpoint=runs/<teacher trained on the source task>")

    def build_student(self, cfg: Any, spec: Any, teacher: nn.Module) -> nn.Module:
        net = super().build_student(cfg, spec, teacher)
        self.n_copied = 0
        if cfg.players.init_from_teacher:
            own = net.state_dict()
            copied = {k: v for k, v in teacher.state_dict().items() if k in own and own[k].shape == v.shape}
            if not copied:
                raise ConfigError("players.init_from_teacher: no teacher weight has a name and shape of the student's")
            net.load_state_dict(copied, strict=False)
            self.n_copied = len(copied)
        return LwFNet(net, teacher.num_classes, cfg.players.pre_final)

    def eval_model(self) -> nn.Module:
        return super().eval_model().net

    def summary_extra(self) -> Dict[str, Any]:
        # not "teacher": its label space differs, so the default teacher test metrics do not apply
        teacher = self.frozen["teacher"]
        ident = network_identity(teacher, self.teacher_path)
        return {"source_teacher": {**ident, "num_classes": teacher.num_classes, "weights_copied": self.n_copied}}
