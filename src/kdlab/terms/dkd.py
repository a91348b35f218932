"""Decoupled KD (Zhao et al. 2022): ``min(epoch / warmup, 1) * T^2 (alpha TCKD + beta NCKD)``."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.config import ConfigError, bounded, temperature_field
from kdlab.losses.dkd import dkd_loss
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("dkd")
class DKDTerm(Term):
    """Decoupled KD (Zhao et al., CVPR 2022, eq. 6): ``w(epoch) * T^2 * (alpha TCKD + beta NCKD)``.

    TCKD: binary KL over {target, rest}; NCKD: KL among the non-target classes; both at temperature T,
    summed over classes, averaged over the batch, teacher detached (:func:`kdlab.losses.dkd.dkd_loss`).
    Defaults alpha 1, beta 8, T 4, warmup 20: mdistiller's CIFAR-100 config (ImageNet: alpha 0.5, beta 0.5,
    T 1). Warm-up as mdistiller: ``w = min(e / warmup, 1)`` with ``e`` its 1-based epoch, here
    ``e = step // steps_per_epoch + 1`` from a step counter (a buffer, so checkpoints resume it) counted
    in training forwards; ``warmup: 0`` = no warm-up. The factor is part of the logged term value."""

    @dataclass
    class Config(TermConfig):
        alpha: float = bounded(1.0, ge=0)
        beta: float = bounded(8.0, ge=0)
        temperature: float = temperature_field(4.0)
        warmup: int = bounded(20, ge=0)  # epochs

    requires = frozenset({"teacher", "logits", "labels"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.warmup = int(cfg.warmup)
        if self.warmup > 0 and not ctx.steps_per_epoch:
            raise ConfigError(f"term 'dkd' in method {ctx.method!r}: objective.student.dkd.warmup = {self.warmup} epochs needs "
                              "the steps per epoch, which this method does not know; set objective.student.dkd.warmup: 0")
        self.steps_per_epoch = int(ctx.steps_per_epoch or 1)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def warmup_factor(self) -> torch.Tensor:
        """``min(e / warmup, 1)`` for the current 1-based epoch ``e = step // steps_per_epoch + 1``."""
        if self.warmup == 0:
            return torch.ones((), device=self.step.device)
        epoch = torch.div(self.step, self.steps_per_epoch, rounding_mode="floor") + 1
        return torch.clamp(epoch.float() / self.warmup, max=1.0)

    def forward(self, s, t, batch):
        factor = self.warmup_factor()
        if self.training:
            self.step += 1  # in place on the buffer, no graph: the next forward is the next step
        loss = dkd_loss(s.out, t.out, batch.y, self.cfg.alpha, self.cfg.beta, self.cfg.temperature)
        return factor.to(loss.dtype) * loss
