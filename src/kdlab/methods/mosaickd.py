"""MosaicKD: knowledge distillation from out-of-domain data by mosaicking (Fang et al., NeurIPS 2021).

A four-player game between a generator G, a patch discriminator D (player ``discriminator``), the
frozen teacher T and the student S (``papers/002`` supplement; NOTES.md for the published command).
On the base :class:`~kdlab.methods.synthesizer.SynthesizerStudentMethod`, one synthesis on a batch of
unlabelled OOD images ``b.x`` (``data.transfer``, required) is:

1. D step: ``L_D = 1/2 [patch_bce(D(b.x), 1) + patch_bce(D(G(z).detach()), 0)]`` (BCE summed over the
   map, divided by the batch size: the published scale);
2. G step on the same G(z), with D and the student frozen (no gradient reaches their parameters; the
   teacher is frozen for good):

   ``L_G = adv * (-T^2 KL(p_t || p_s)) + align * mean_i H(p_t(.|x_i)) + local * patch_bce(D(G(z)), 1)
   + balance * sum_y pbar(y) log_b pbar(y)``  (:mod:`kdlab.losses.mosaic`);

then the base's student steps on ``cat(G(z'), b.x)`` with ``objective.student`` (default KL(p_t || p_s) at
T = 1), ``synth_every = 5`` of them per synthesis.

``players.regularizer`` selects the supplement's Fig. 1 settings: ``patch`` (MosaicKD: ``players.disc``, a
map of logits over patches), ``image`` (a full-image discriminator ``players.image_disc``, one logit per
image: "trapped by the class semantics of OOD data") or ``none`` (no discriminator and no D step;
``local`` is ignored: "naively maximise the teacher's confidence"). ``local = 0`` also skips the D step.

Logs (unweighted values): ``d_loss``, ``g_loss`` (the weighted sum), ``g_adv`` (= -KL), ``g_align``,
``g_local``, ``g_balance``; a term whose weight is 0 (or ``g_local`` without a discriminator) is not
computed and not logged, except ``g_align``/``g_balance`` (teacher-only, always logged).

Choices where the paper is silent: the networks stay in train mode during the G step (BatchNorm
statistics of the student and D see G(z), as in the published code); D's loss is not multiplied by
``local`` (the published code does, which only matters for ``local = 0``, here a skipped D step).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

import torch
from torch import nn

from kdlab.config import ConfigError, OptimConfig, bounded, choice, temperature_field
from kdlab.data.batch import Batch
from kdlab.losses.mosaic import (BALANCE_LOG_BASES, adversarial_kl, align_loss, balance_loss, patch_bce,
                                 patch_discriminator_loss)
from kdlab.methods.base import METHODS, unwrap
from kdlab.methods.gan_players import frozen, nan_guard
from kdlab.methods.synthesizer import SynthesizerConfig, SynthesizerStudentMethod
from kdlab.models.gan import DISCRIMINATORS, build_discriminator

REGULARIZERS = ("patch", "image", "none")
#: generator terms: log name -> weight key
G_TERMS = {"g_adv": "adv", "g_align": "align", "g_local": "local", "g_balance": "balance"}


def _d_optim() -> OptimConfig:
    # published kd_mosaic.py: optim_d = Adam(lr_g = 1e-3, betas (0.5, 0.999)), cosine annealing
    return OptimConfig(name="adam", lr=1e-3, betas=[0.5, 0.999], weight_decay=0.0, scheduler="cosine")


@dataclass
class MosaicKDConfig(SynthesizerConfig):
    """``players`` section of ``mosaickd``; weights default to the published command (README: ``--local 1
    --align 1 --adv 1 --balance 10``), T to the published ``kldiv`` default (1)."""

    adv: float = bounded(1.0, ge=0)  # weight of -KL(p_t || p_s) on G(z) (eq. 4, first term)
    align: float = bounded(1.0, ge=0)  # weight of the mean teacher entropy on G(z)
    local: float = bounded(1.0, ge=0)  # weight of the discriminator's generator loss (eq. 4's R)
    balance: float = bounded(10.0, ge=0)  # weight of eq. 1 (-H of the batch-mean teacher prediction)
    temperature: float = temperature_field(1.0)  # T of the generator's adversarial KL
    balance_log: str = choice("2", BALANCE_LOG_BASES)  # log base of eq. 1: 2 (published code, bits) | e (nats)
    regularizer: str = choice("patch", REGULARIZERS)  # supplement Fig. 1: patch | image | none
    disc: str = "patch"  # discriminator of regularizer=patch (kdlab list discriminators)
    disc_kwargs: Dict[str, Any] = field(default_factory=dict)  # e.g. final_stride (Table 4), widths
    image_disc: str = "dcgan"  # full-image discriminator of regularizer=image (one logit per image)
    image_disc_kwargs: Dict[str, Any] = field(default_factory=dict)
    d_optim: OptimConfig = field(default_factory=_d_optim)


@METHODS.register("mosaickd")
class MosaicKD(SynthesizerStudentMethod):
    """MosaicKD (Fang et al. 2021): generator + patch discriminator + frozen teacher + student, on out-of-domain data.

    Raises (at construction, before training): ConfigError for ``data.transfer = none`` (the OOD
    images are D's real data and half of each student batch), an unregistered discriminator (lists
    the accepted ones) or kwargs it does not take, a discriminator whose output is not logits
    [B] / [B, 1, h, w] for the teacher's images, ``regularizer = image`` with more than one logit per
    image, and generator weights that are all 0.
    """

    Config = MosaicKDConfig
    uses_transfer = True
    needs_transfer = True

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        lc = cfg.players
        self.regularizer = str(lc.regularizer)
        self.disc_cells = 0  # logits per image of the discriminator (0: none)
        if self.regularizer != "none":
            disc = self._build_disc(lc, spec)
            self.add_player("discriminator", disc, lc.d_optim)
        # the discriminator only acts through the generator's local term
        self.use_disc = self.regularizer != "none" and float(lc.local) > 0
        weights = {k: float(lc[w]) for k, w in G_TERMS.items() if k != "g_local" or self.regularizer != "none"}
        if not any(w > 0 for w in weights.values()):
            raise ConfigError(f"mosaickd: every generator weight is 0 ({weights}, regularizer = {self.regularizer!r}); "
                              "the generator would not train: set players.adv/align/local/balance > 0")

    def _build_disc(self, lc: Any, spec: Any) -> nn.Module:
        key = "players.disc" if self.regularizer == "patch" else "players.image_disc"
        name = lc.disc if self.regularizer == "patch" else lc.image_disc
        kwargs = dict(lc.disc_kwargs if self.regularizer == "patch" else lc.image_disc_kwargs)
        if name not in DISCRIMINATORS:
            raise ConfigError(f"{key} = {name!r} is not a registered discriminator; accepted: "
                              f"{', '.join(DISCRIMINATORS.names())}")
        try:
            disc = build_discriminator(name, in_channels=spec.in_channels, image_size=spec.image_size, **kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key}_kwargs = {kwargs} do not fit discriminator {name!r}: {exc}") from exc
        image = (spec.in_channels, spec.image_size, spec.image_size)
        was = disc.training
        disc.eval()  # a shape probe: leave BatchNorm statistics untouched
        with torch.no_grad():
            out = disc(torch.zeros(2, *image))
        disc.train(was)
        if out.dim() not in (1, 4) or out.shape[0] != 2 or (out.dim() == 4 and out.shape[1] != 1):
            raise ConfigError(f"{key} = {name!r} returns {tuple(out.shape[1:])} per image {image}; mosaickd needs one "
                              "logit [B] or a logit map [B, 1, h, w]")
        self.disc_cells = int(out[0].numel())
        if self.regularizer == "image" and self.disc_cells != 1:
            raise ConfigError(f"players.regularizer = 'image' needs one logit per image; {key} = {name!r} gives a "
                              f"{tuple(out.shape[2:])} map: use a full-image discriminator (e.g. dcgan)")
        return disc

    # -- one synthesis -----------------------------------------------------------------------------
    def synthesize(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        """A D step on ``(batch.x, G(z))`` (when a discriminator acts) then a G step on the same G(z)."""
        if batch.x is None:
            raise RuntimeError("mosaickd needs the OOD images of data.transfer in every batch; got batch.x = None")
        device = self.device()
        fake = self.generate(self.batch_size, device)
        logs: Dict[str, torch.Tensor] = {}
        if self.use_disc:
            logs["d_loss"] = self.d_step(batch.x.to(device), fake.detach())
        logs.update(self.g_step(fake))
        return logs

    def d_step(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """One discriminator update: real OOD images -> 1, generated (detached) -> 0. Returns L_D (detached)."""
        disc = self.players["discriminator"]
        loss = patch_discriminator_loss(disc(real), disc(fake.detach()))
        self.step_optimizer("discriminator", loss)
        return loss.detach()

    def generator_terms(self, fake: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The unweighted generator terms on ``fake`` (normalised images WITH the generator's graph); D and
        the student are frozen while they see it, so only the generator gets gradients."""
        lc = self.cfg.players
        t = self.teacher_net()(fake)
        terms = {"g_align": align_loss(t), "g_balance": balance_loss(t, log_base=str(lc.balance_log))}
        if float(lc.adv) > 0:
            student = self.student_net()
            with frozen(student):
                terms["g_adv"] = adversarial_kl(student(fake), t, float(lc.temperature))
        if self.use_disc:
            disc = unwrap(self.players["discriminator"])  # no DDP hooks: D is not stepped here
            with frozen(disc):
                terms["g_local"] = patch_bce(disc(fake), 1.0)
        return terms

    def g_step(self, fake: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One generator update on ``fake``; returns ``g_loss`` and the unweighted terms (detached)."""
        lc = self.cfg.players
        terms = self.generator_terms(fake)
        loss = sum(float(lc[G_TERMS[k]]) * v for k, v in terms.items())
        loss = nan_guard(fake, loss)
        self.step_optimizer("generator", loss)
        out = {"g_loss": loss.detach()}
        out.update({k: v.detach() for k, v in terms.items()})
        return out

    def summary_extra(self) -> Dict[str, Any]:
        lc = self.cfg.players
        out = super().summary_extra()
        out["mosaickd"] = {"regularizer": self.regularizer, "disc_cells": self.disc_cells,
                           "balance_log": str(lc.balance_log),
                           **{w: float(lc[w]) for w in ("adv", "align", "local", "balance", "temperature")}}
        return out
