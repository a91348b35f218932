"""DFAD: data-free adversarial distillation (Fang et al. 2019, arXiv:1912.11006), a data-free baseline of the
MosaicKD (Table 1) and Fast-Datafree tables.

A min-max game on the L1 distance between logits (DFAD eqs. 4-5): the generator MAXIMISES
``L_MAE(t(G(z)), s(G(z)))`` (it looks for images where the student still disagrees with the teacher) and
the student minimises it. One synthesis round = ``players.synth_steps`` generator updates on
``-logit_l1(s(G(z)), t(G(z)))`` (student and teacher frozen, the gradient reaches G through both), then
``players.synth_every`` student steps on fresh synthetic batches (the base's loop).

Defaults and their sources:
  * ``synth_every: 5``: "5 student steps per generator step" (DFAD's code: ``for k in range(5)``; NOTES.md);
  * ``terms: {l1: {weight: 1}}``: DFAD's student loss is the same L1 (``F.l1_loss``: elementwise mean);
  * ``reduction: mean``: the generator's L1, DFAD's ``F.l1_loss``;
  * ``g_optim``: the base's Adam 1e-3 betas (0.5, 0.999), Fast-Datafree/CMI's generator optimizer for
    its DFAD runs (DFAD's own code: Adam 1e-3 with PyTorch's default betas (0.9, 0.999));
  * the student's optimizer is ``optim`` (DFAD's code: SGD 0.1, momentum 0.9, weight decay 5e-4).

Data-free (``uses_transfer = False``): run with ``data.transfer=none``; a transfer set given to it is
ignored with a warning (the base).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

import torch

from kdlab.config import choice
from kdlab.data.batch import Batch
from kdlab.losses.datafree import L1_REDUCTIONS, logit_l1
from kdlab.methods.base import METHODS
from kdlab.methods.gan_players import frozen, nan_guard
from kdlab.methods.synthesizer import SynthesizerConfig, SynthesizerStudentMethod


@dataclass
class DFADConfig(SynthesizerConfig):
    """``loss`` of ``dfad``: the base's keys (generator, synth_every, ...) and the generator's L1 reduction."""

    reduction: str = choice("mean", L1_REDUCTIONS)  # the generator's L1 (mean: F.l1_loss, DFAD code)


@METHODS.register("dfad")
class DFAD(SynthesizerStudentMethod):
    """Data-free adversarial distillation: the generator maximises the student-teacher logit L1."""

    Config = DFADConfig
    default_objective = {"student": {"l1": {"weight": 1.0}}}  # DFAD: the student minimises the L1
    uses_transfer = False

    def synthesize(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        x = self.generate(self.batch_size, self.device())
        student = self.student_net()
        with frozen(student):  # the generator's step must leave no gradient in the student
            s = student(x)
            t = self.teacher_net()(x)
            l1 = logit_l1(s, t, reduction=self.cfg.players.reduction)
        loss = nan_guard(x, -l1)
        self.step_optimizer("generator", loss)
        return {"g_loss": loss.detach(), "g_l1": l1.detach()}
