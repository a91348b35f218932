"""Pix2Pix teacher (Isola et al. 2017): the paired image-to-image teacher of the VEM paper (``papers/003``
sec. 4.3 eq. 11, ``min_G max_D L_GAN + lambda_rec L_rec``, and Table 1's U-Net baseline).

Per training step on a paired batch (``x`` = input image, ``target`` = its ground truth, both in [-1, 1]):

1. ``fake = G(x)``;
2. one step of the conditional PatchGAN D on ``[x, target]`` (real) vs ``[x, fake]`` (fake, detached):
   ``0.5 * (l(D(x, y), 1) + l(D(x, G(x)), 0))`` (:func:`kdlab.losses.map_discriminator_loss`);
3. one step of G through D (frozen meanwhile) on ``l(D(x, G(x)), 1) + lambda_rec * |G(x) - y|_1``
   (:func:`kdlab.losses.pix2pix_generator_loss`; lambda_rec = 100, L1 as a per-element mean).

``l`` is BCE on logits (``players.gan_mode = vanilla``, Pix2Pix) or least squares (``lsgan``). Both players
use the ``optim`` section (Pix2Pix: Adam 2e-4, betas (0.5, 0.999), ``scheduler: linear``: constant,
then linear decay to zero); ``players.disc_lr`` may set D's rate apart. Validation: the MAE to the ground
truth on the validation pairs (``val/mae``, [0, 1] pixel units, lower is better).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch

from kdlab.config import bounded
from kdlab.data.batch import Batch
from kdlab.engine.optim import optim_with_lr
from kdlab.losses import map_discriminator_loss, pix2pix_generator_loss
from kdlab.methods.base import METHODS
from kdlab.methods.gan_players import frozen, nan_guard
from kdlab.methods.i2i_eval import mae_to_target
from kdlab.methods.i2i_players import (
    TranslationEvalConfig,
    TranslationGameConfig,
    build_image_generator,
    build_patchgan,
    check_translation_data,
)
from kdlab.methods.translation_teacher import TranslationTeacher


@METHODS.register("pix2pix")
class Pix2Pix(TranslationTeacher):
    """Pix2Pix teacher: U-Net (or any image generator) + conditional PatchGAN on paired data, VEM eq. 11.

    Raises (at construction): ConfigError for unpaired or classification data, a latent generator, or a
    PatchGAN too deep for the image size.
    """

    selection_key = "val/mae"
    selection_mode = "min"

    Eval = TranslationEvalConfig

    @dataclass
    class Config(TranslationGameConfig):
        """``players`` section of ``kdlab train-gan method=pix2pix``."""

        lambda_rec: float = bounded(100.0, ge=0)  # weight of the L1 to the ground truth (eq. 11's lambda_rec)

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        check_translation_data(spec, "pix2pix", "paired")
        lc = cfg.players
        gen = build_image_generator(cfg, spec.in_channels, spec.out_channels, spec.image_size)
        disc = build_patchgan(spec.in_channels + spec.out_channels, spec.image_size, lc.ndf, lc.n_layers, lc.disc_norm)
        self.add_player("generator", gen)
        self.add_player("discriminator", disc, optim_with_lr(cfg.optim, lc.disc_lr, "players.disc_lr"))

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        x, y = batch.x, batch.target
        G, D = self.players["generator"], self.players["discriminator"]
        mode = self.cfg.players.gan_mode
        fake = G(x)
        d = map_discriminator_loss(D(torch.cat([x, y], 1)), D(torch.cat([x, fake.detach()], 1)), mode)
        self.step_optimizer("discriminator", d)
        with frozen(D):
            total, adv, rec = pix2pix_generator_loss(D(torch.cat([x, fake], 1)), fake, y, self.cfg.players.lambda_rec, mode)
            self.step_optimizer("generator", total)
        out = {"loss_d": d.detach(), "loss_g": total.detach(), "adv": adv.detach(), "l1": rec.detach()}
        out["loss"] = nan_guard(fake, out["loss_d"] + out["loss_g"])
        return out

    def validate(self, loader: Any, device: Any) -> Dict[str, float]:
        """``val/mae``: mean absolute error to the ground truth in [0, 1] pixel units."""
        return {"val/mae": mae_to_target(self.eval_model(), loader, device)}
