"""DAFL: data-free learning of student networks (Chen et al., ICCV 2019), a data-free baseline of the
MosaicKD and Fast-Datafree tables.

The teacher is a fixed discriminator: the generator makes images the teacher classifies confidently
(one-hot loss, eq. 5), that excite its penultimate features (activation loss, eq. 6) and whose
predictions are balanced over the classes within a batch (information entropy loss, eq. 7), eq. 9:

    L_G = oh * L_oh + act * L_a + ie * L_ie          (kdlab.losses.datafree)

and the student learns the teacher's soft outputs on the synthetic images (KD, the base's default
objective: ``KL(p_t || p_s)`` at T = 1, batchmean, as DAFL's ``kdloss``).

Defaults and their sources (DAFL's published code, ``DAFL-train.py`` of huawei-noah, MNIST run):
  * ``oh: 1``, ``act: 0.1`` (the paper's alpha), ``ie: 5`` (beta): ``--oh 1 --a 0.1 --ie 5`` (the CIFAR
    commands of its README use oh 0.05, ie 5 / 20, act 0.01);
  * ``log_base: '10'``: the code's ``torch.log10`` in L_ie;
  * ``act_reduction: mean``: the code's ``-features_T.abs().mean()`` (eq. 6 as printed: ``batchmean``);
  * student KD at T = 1 (the code's ``kdloss``: ``log_softmax(y)`` vs ``softmax(t)``, summed / B);
  * ``synth_every: 1``: the code updates G and S once each per iteration (Fast-Datafree's DAFL runs use
    5 student steps per generator step: ``players.synth_every=5``);
  * ``g_optim``: the base's Adam 1e-3 betas (0.5, 0.999), Fast-Datafree's (DAFL's code: Adam, lr_G 0.2 on
    MNIST, 0.02 on CIFAR, default betas).

``players.feature``: the teacher feature of L_a; empty (default) = the input of the teacher's final linear
layer ``fc`` (the "features before the fully-connected layer" of the paper), taken with a forward
pre-hook; or a friendly feature / module path of the teacher.

Raises (at construction): ConfigError: an unknown ``players.feature`` (lists the teacher's features), or an
empty one for a teacher without an ``fc`` linear layer (names the teacher's architecture).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import nn

from kdlab.config import ConfigError, bounded, choice
from kdlab.data.batch import Batch
from kdlab.losses.datafree import L1_REDUCTIONS, LOG_BASES, activation_loss, information_entropy_loss, one_hot_loss
from kdlab.methods.base import METHODS
from kdlab.methods.gan_players import nan_guard
from kdlab.methods.synthesizer import SynthesizerConfig, SynthesizerStudentMethod
from kdlab.models.base import UnknownFeatureError, capture_features, feature_shapes


@dataclass
class DAFLConfig(SynthesizerConfig):
    """``loss`` of ``dafl``: the weights of eq. 9 and their conventions (defaults: DAFL's code, MNIST)."""

    oh: float = bounded(1.0, ge=0)  # one-hot loss L_oh (eq. 5)
    act: float = bounded(0.1, ge=0)  # activation loss L_a (eq. 6): the paper's alpha
    ie: float = bounded(5.0, ge=0)  # information entropy loss L_ie (eq. 7): the paper's beta
    log_base: str = choice("10", LOG_BASES)  # of L_ie (DAFL code: log10)
    act_reduction: str = choice("mean", L1_REDUCTIONS)  # mean over B*D (code) | batchmean (eq. 6)
    feature: str = ""  # teacher feature of L_a; "" = the input of the teacher's fc
    synth_every: int = bounded(1, ge=1)  # DAFL code: one student step per generator step


@METHODS.register("dafl")
class DAFL(SynthesizerStudentMethod):
    """DAFL: generator trained against the fixed teacher (one-hot + activation + information entropy)."""

    Config = DAFLConfig
    uses_transfer = False

    def __init__(self, cfg, spec, transfer=None) -> None:
        super().__init__(cfg, spec, transfer)
        teacher = self.teacher_net()
        arch = getattr(teacher, "arch", type(teacher).__name__)
        name = str(cfg.players.feature)
        if name:
            try:
                feature_shapes(teacher, [name], (spec.in_channels, spec.image_size, spec.image_size))
            except UnknownFeatureError as exc:
                raise ConfigError(f"players.feature = {name!r}: the teacher {exc}") from None
        elif not isinstance(getattr(teacher, "fc", None), nn.Linear):
            raise ConfigError(f"method 'dafl' takes its activation loss on the input of the teacher's final linear "
                              f"layer 'fc'; the teacher {arch!r} has none: set players.feature to one of its features")

    def _teacher_forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(teacher logits [B, K], the feature of L_a [B, ...]) from one forward pass on ``x``."""
        teacher, name = self.teacher_net(), str(self.cfg.players.feature)
        if name:
            with capture_features(teacher, [name]) as feats:
                return teacher(x), feats[name]
        seen: Dict[str, torch.Tensor] = {}
        hook = teacher.fc.register_forward_pre_hook(lambda _m, inputs: seen.__setitem__("f", inputs[0]))
        try:
            return teacher(x), seen["f"]
        finally:
            hook.remove()

    def synthesize(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        lc = self.cfg.players
        x = self.generate(self.batch_size, self.device())
        t, f = self._teacher_forward(x)
        oh = one_hot_loss(t)
        act = activation_loss(f, reduction=lc.act_reduction)
        ie = information_entropy_loss(t, base=lc.log_base)
        loss = nan_guard(x, lc.oh * oh + lc.act * act + lc.ie * ie)
        self.step_optimizer("generator", loss)
        return {"g_loss": loss.detach(), "g_oh": oh.detach(), "g_act": act.detach(), "g_ie": ie.detach()}
