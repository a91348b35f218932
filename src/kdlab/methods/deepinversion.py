"""DFQ / DeepInversion-style generator: BatchNorm-statistics matching for teachers with BatchNorm, the
generator-based "DFQ" baseline of the Fast-Datafree and MosaicKD tables (Choi et al. 2020, "Data-free
network quantization with adversarial knowledge distillation"; the BatchNorm prior of Yin et al. 2020,
"Dreaming to distill: data-free knowledge transfer via DeepInversion", eq. 4).

The generator makes images whose statistics at the input of every teacher BatchNorm layer match the
layer's running statistics (what the teacher saw in training), which the teacher classifies confidently,
that are class-balanced within a batch, and on which the student still disagrees with the teacher:

    L_G = bn * R_feature + oh * CE(z_t, y) + balance * L_ie + adv * (-D(t, s))    (kdlab.losses.datafree)

``y``: the teacher's own argmax (``targets: argmax``, Fast-Datafree's/CMI's ``GenerativeSynthesizer`` and
MosaicKD's data-free code) or labels drawn uniformly per batch (``targets: random``, DeepInversion's
image optimisation). ``D``: ``T^2 KL(p_t || p_s)`` (``adv_mode: kl``) or DFAD's logit L1 (``l1``). The
student learns ``KL(p_t || p_s)`` at T = 1 (the base's default objective, Fast-Datafree's ``KLDiv()``).
The BatchNorm inputs are taken with forward pre-hooks on the teacher, registered only for the generator's
forward pass.

Defaults and their sources (Fast-Datafree / CMI ``scripts/dfq``: ``--bn 1 --oh 1 --adv 1 --balance 20
--act 0 --kd_steps 10 --g_steps 1 --lr_g 1e-3``, criterion ``KLDiv()`` at T = 1, ``torch.log`` in the
balance term; generator Adam betas (0.5, 0.999), the base's ``g_optim``):
  * ``bn: 1``, ``oh: 1``, ``adv: 1``, ``balance: 20``, ``log_base: 'e'``, ``adv_mode: kl``,
    ``adv_temperature: 1``, ``targets: argmax``, ``bn_norm: layer`` (DeepInversionHook summed over layers),
    ``synth_every: 10`` (kd_steps).
  * MosaicKD's own data-free baseline (``kd_datafree.py``: ``--oh 1 --ie 20 --bn 1 --adv 1``) is
    ``log_base=10 bn_norm=concat synth_every=5`` with the same weights.

Raises (at construction): ConfigError: a teacher without BatchNorm layers (names its architecture).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
from torch import nn

from kdlab.config import ConfigError, bounded, choice, temperature_field
from kdlab.data.batch import Batch
from kdlab.losses.datafree import (ADV_MODES, BN_NORMS, LOG_BASES, adversarial_loss, bn_statistics_loss,
                                   information_entropy_loss, one_hot_loss)
from kdlab.methods.base import METHODS
from kdlab.methods.gan_players import frozen, nan_guard
from kdlab.methods.synthesizer import SynthesizerConfig, SynthesizerStudentMethod

TARGETS = ("argmax", "random")


@dataclass
class DeepInversionConfig(SynthesizerConfig):
    """``loss`` of ``deepinversion`` (defaults: Fast-Datafree's / CMI's DFQ scripts)."""

    bn: float = bounded(1.0, ge=0)  # BatchNorm-statistics matching R_feature
    oh: float = bounded(1.0, ge=0)  # cross entropy of the teacher's logits vs targets
    adv: float = bounded(1.0, ge=0)  # adversarial term -D(teacher, student)
    balance: float = bounded(20.0, ge=0)  # information entropy of the batch-mean teacher prediction
    log_base: str = choice("e", LOG_BASES)  # of the balance term (Fast-Datafree: natural log)
    bn_norm: str = choice("layer", BN_NORMS)  # layer: sum of per-layer L2 norms | concat: MosaicKD code
    targets: str = choice("argmax", TARGETS)  # labels of the oh term
    adv_mode: str = choice("kl", ADV_MODES)  # kl: T^2 KL(p_t || p_s) | l1: DFAD's logit L1
    adv_temperature: float = temperature_field(1.0)  # T of adv_mode kl
    synth_every: int = bounded(10, ge=1)  # Fast-Datafree DFQ: kd_steps 10 per generator step


def batchnorm_layers(net: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``net`` that keep running statistics (in module order)."""
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats and m.running_mean is not None and m.running_var is not None]


@METHODS.register("deepinversion")
class DeepInversion(SynthesizerStudentMethod):
    """Generator matched to the teacher's BatchNorm statistics, plus one-hot, balance and adversarial terms."""

    Config = DeepInversionConfig
    uses_transfer = False

    def __init__(self, cfg, spec, transfer=None) -> None:
        super().__init__(cfg, spec, transfer)
        teacher = self.teacher_net()
        self._bn = batchnorm_layers(teacher)
        if not self._bn:
            arch = getattr(teacher, "arch", type(teacher).__name__)
            raise ConfigError(f"method 'deepinversion' matches the running statistics of the teacher's BatchNorm "
                              f"layers; the teacher {arch!r} ({self.teacher_path}) has no BatchNorm layer with running "
                              "statistics: use a teacher with BatchNorm (e.g. vgg4, resnet20, wrn_16_1) or method "
                              "dfad / dafl")

    def _teacher_forward(self, x: torch.Tensor):
        """(teacher logits [B, K], the input of every BatchNorm layer) from one forward pass on ``x``."""
        inputs: List[torch.Tensor] = [None] * len(self._bn)  # type: ignore[list-item]
        hooks = [bn.register_forward_pre_hook(lambda _m, args, i=i: inputs.__setitem__(i, args[0]))
                 for i, bn in enumerate(self._bn)]
        try:
            t = self.teacher_net()(x)
        finally:
            for h in hooks:
                h.remove()
        missing = [i for i, v in enumerate(inputs) if v is None]
        if missing:
            raise RuntimeError(f"the teacher's BatchNorm layers {missing} did not run in its forward pass")
        return t, inputs

    def synthesize(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        lc = self.cfg.players
        x = self.generate(self.batch_size, self.device())
        t, bn_inputs = self._teacher_forward(x)
        r_bn = bn_statistics_loss(bn_inputs, [b.running_mean for b in self._bn], [b.running_var for b in self._bn],
                                  norm=lc.bn_norm)
        y = None if lc.targets == "argmax" else torch.randint(0, t.shape[1], (t.shape[0],), device=t.device)
        oh = one_hot_loss(t, y)
        ie = information_entropy_loss(t, base=lc.log_base)
        loss = lc.bn * r_bn + lc.oh * oh + lc.balance * ie
        logs = {"g_bn": r_bn.detach(), "g_oh": oh.detach(), "g_balance": ie.detach()}
        if lc.adv > 0:
            student = self.student_net()
            with frozen(student):  # no gradient may stay in the student
                adv = adversarial_loss(student(x), t, mode=lc.adv_mode, temperature=lc.adv_temperature)
            loss = loss + lc.adv * adv
            logs["g_adv"] = adv.detach()
        loss = nan_guard(x, loss)
        self.step_optimizer("generator", loss)
        return {"g_loss": loss.detach(), **logs}
