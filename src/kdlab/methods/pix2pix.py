"""Pix2Pix teacher (Isola et al. 2017): the paired image-to-image teacher of the VEM paper (``papers/003``
sec. 4.3 eq. 11, ``min_G max_D L_GAN + lambda_rec L_rec``, and Table 1's U-Net baseline).

Per training step on a paired batch (``x`` = input image, ``target`` = its ground truth, both in [-1, 1]):

1. ``fake = G(x)``;
2. one step of the conditional PatchGAN D on ``[x, target]`` (real) vs ``[x, fake]`` (fake, detached) on
   ``objective.discriminator``: its ``gan`` term, weight 0.5 (the code's halving),
   ``0.5 * (l(D(x, y), 1) + l(D(x, G(x)), 0))``;
3. one step of G through D (frozen meanwhile) on ``objective.generator``: ``gan`` ``l(D(x, G(x)), 1)`` +
   ``l1_image`` with the ground truth, weight lambda_rec = 100 (L1 as a per-element mean): eq. 11.

``l`` is BCE on logits (``gan.mode = vanilla``, Pix2Pix) or least squares (``lsgan``), one mode for both
objectives. Both players
use the ``optim`` section (Pix2Pix: Adam 2e-4, betas (0.5, 0.999), ``scheduler: linear``: constant,
then linear decay to zero); ``players.disc_lr`` may set D's rate apart. Validation: the MAE to the ground
truth on the validation pairs (``val/mae``, [0, 1] pixel units, lower is better).
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from kdlab.data.batch import Batch
from kdlab.engine.optim import optim_with_lr
from kdlab.games.base import METHODS
from kdlab.games.gan_players import DiscriminatorGame, nan_guard
from kdlab.games.i2i_eval import mae_to_target
from kdlab.games.i2i_players import (
    TRANSLATION_MOVED,
    TranslationEvalConfig,
    TranslationGameConfig,
    build_image_generator,
    build_patchgan,
    check_translation_data,
)
from kdlab.games.translation_teacher import TranslationTeacher
from kdlab.terms import Outputs


@METHODS.register("pix2pix")
class Pix2Pix(TranslationTeacher):
    """Pix2Pix teacher: U-Net (or any image generator) + conditional PatchGAN on paired data, VEM eq. 11.

    Raises (at construction): ConfigError for unpaired or classification data, a latent generator, or a
    PatchGAN too deep for the image size.
    """

    selection_key = "val/mae"
    selection_mode = "min"

    Eval = TranslationEvalConfig
    Config = TranslationGameConfig
    objectives = {"generator": "generator", "discriminator": "discriminator"}
    default_objective = {"generator": {"gan": {"weight": 1.0, "mode": "vanilla"},
                                       "l1_image": {"weight": 100.0, "target": "ground_truth"}},  # eq. 11's lambda_rec
                         "discriminator": {"gan": {"weight": 0.5, "mode": "vanilla"}}}
    moved = {"lambda_rec": "objective.generator.l1_image.weight", **TRANSLATION_MOVED}

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        check_translation_data(spec, "pix2pix", "paired")
        lc = cfg.players
        gen = build_image_generator(cfg, spec.in_channels, spec.out_channels, spec.image_size)
        disc = build_patchgan(spec.in_channels + spec.out_channels, spec.image_size, lc.ndf, lc.n_layers, lc.disc_norm)
        self.g_objective, d_objective = self.game_objectives(gen, "discriminator", condition=spec.in_channels)
        self.game = DiscriminatorGame(self, d_objective)
        self.add_player("generator", gen)
        self.add_player("discriminator", disc, optim_with_lr(cfg.optim, lc.disc_lr, "players.disc_lr"))

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        x, y = batch.x, batch.target
        fake = self.players["generator"](x)
        out = self.game.step(torch.cat([x, y], 1), torch.cat([x, fake.detach()], 1))
        terms = self.g_objective(Outputs(out=fake, x=x), None, batch)  # D frozen inside the gan term
        self.step_optimizer("generator", terms["loss"])
        out.update({f"g_{k}": v.detach() for k, v in terms.items() if k != "loss"})
        out["loss_g"] = terms["loss"].detach()
        out["loss"] = nan_guard(fake, out["loss_d"] + out["loss_g"])
        return out

    def validate(self, loader: Any, device: Any) -> Dict[str, float]:
        """``val/mae``: mean absolute error to the ground truth in [0, 1] pixel units."""
        return {"val/mae": mae_to_target(self.eval_model(), loader, device)}
