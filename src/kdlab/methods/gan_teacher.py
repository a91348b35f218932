"""Teacher GAN training (Aguinaldo et al. 2019, sec. 2.1 and 3): a DCGAN or WDCGAN generator with
depth scale factor d, trained by the standard GAN game (eq. 1, non-saturating generator loss), WGAN
with weight clipping (eq. 2; Arjovsky et al. 2017) or WGAN with gradient penalty (Gulrajani et al.).

The game is the ``gan`` term of ``objective.generator`` and ``objective.discriminator`` (mode vanilla =
the standard game, lsgan, hinge = SAGAN's, wgan), WGAN-GP adds ``gradient_penalty`` to the
discriminator's objective and WGAN's clipping is ``players.clip``.

Per training step (one batch of real images ``x`` mapped to [-1, 1]): one discriminator step on
``x`` vs ``G(z)`` (fresh ``z ~ N(0, I)``); every ``n_critic``-th step also one generator step on a
fresh ``z``. With ``players.clip`` the critic's weights are clipped after each of its updates. Both players use the
``optim`` section (DCGAN: Adam 2e-4, betas (0.5, 0.999)); ``players.disc_lr`` may set D's rate apart.
Arjovsky et al. train WGAN with RMSprop 5e-5; kdlab's optimizers are sgd/adam/adamw, so the WGAN
recipe uses Adam 5e-5 with betas (0.5, 0.999) (a documented departure). One real batch serves one
discriminator step (rather than n_critic fresh real batches per generator step as in Arjovsky's
Algorithm 1): the same number of critic updates per generator update, one pass over the data per epoch.
Optionally the exported generator is an exponential moving average of G's weights (``players.ema``).
A sample grid from fixed latents is written to ``samples/epoch_NNN.png`` after every epoch.

Model selection: with ``data.val_size = 0`` (the recipes) the last epoch is kept; with a validation
split and ``eval.extractor`` set, the epoch of lowest FID against the validation images
(``eval.val_samples`` generated) is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn

from kdlab.config import ConfigError, bounded
from kdlab.data.batch import Batch
from kdlab.engine.loading import load_extractor
from kdlab.games.base import METHODS, Method, unwrap
from kdlab.games.gan_config import GAME_MOVED, GanEvalConfig, GanGameConfig, check_eval_config, check_game_config
from kdlab.games.gan_eval import gan_finalize, real_image_batches
from kdlab.games.gan_players import (
    EMA,
    DataRange,
    DiscriminatorGame,
    build_disc,
    build_gen,
    disc_optim_cfg,
    generator_export_state,
    nan_guard,
    save_epoch_grid,
)
from kdlab.metrics.generative import FeatureSet, fid_from_features, generator_batches
from kdlab.ranks import rank_rows
from kdlab.terms import CriticView, Outputs, TermContext


@METHODS.register("gan")
class GANTraining(Method):
    """Teacher GAN: DCGAN/WDCGAN/SAGAN generator and discriminator, the game of their objectives, optional EMA."""

    objectives = {"generator": "generator", "discriminator": "discriminator"}
    default_objective = {"generator": {"gan": {"weight": 1.0, "mode": "vanilla"}},
                         "discriminator": {"gan": {"weight": 1.0, "mode": "vanilla"}}}
    moved = {k: v.replace("<generator or student>", "generator") for k, v in GAME_MOVED.items() if k != "adv_weight"}

    kind = "generator"
    role = "teacher"
    export_name = "teacher"
    selection_key = "val/fid"
    selection_mode = "min"

    @dataclass
    class Config(GanGameConfig):
        """``players`` section of ``kdlab train-gan``: the discriminator, its steps and clipping, the EMA of G."""

        ema: float = bounded(0.0, ge=0, lt=1)  # decay of an EMA of G's weights (0 = off); the EMA generator is exported

    @dataclass
    class Eval(GanEvalConfig):
        """``eval`` section of ``kdlab train-gan``: the generative evaluation's keys and the validation FID's size."""

        val_samples: int = bounded(1000, ge=1)  # generated images for the per-epoch validation FID (with a val split)

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        lc = cfg.players
        check_eval_config(cfg.eval, cfg.data.max_test)
        gen = build_gen(cfg, spec)
        disc_name = check_game_config(lc, cfg.model.name, cfg.objective, "generator")
        if cfg.data.val_size > 0 and not cfg.eval.extractor:
            raise ConfigError(
                f"data.val_size = {cfg.data.val_size}: selecting a GAN epoch needs a validation FID, i.e. "
                "eval.extractor=runs/<classifier run>; or set data.val_size=0 to keep the last epoch")
        disc = build_disc(cfg, spec, disc_name, gen)
        image = (spec.in_channels, spec.image_size, spec.image_size)
        critic = CriticView(lambda: unwrap(self.players["discriminator"]), image,
                            trained=lambda: self.players["discriminator"])

        def ctx(role: str) -> TermContext:
            return TermContext(method=cfg.method, kind="generator", student=gen, teacher=None,
                               student_input=(gen.latent_dim,), teacher_input=image, spec=spec, critic=critic, role=role,
                               provides=frozenset({"critic", "images"} if role == "generator" else {"critic"}),
                               why_not={"teacher": "a GAN teacher has no teacher"})

        self.g_objective = self.plain_objective(ctx("generator"), "generator", " (set the gan term)")
        self.game = DiscriminatorGame(self, self.plain_objective(ctx("discriminator"), "discriminator"), lc.clip)
        self.range = DataRange(spec)
        self.ema = EMA(gen, lc.ema) if lc.ema > 0 else None
        self.add_player("generator", gen)
        self.add_player("discriminator", disc, disc_optim_cfg(cfg))
        self._g_loss = None
        self._val = None  # (features, logits) networks for the validation FID, loaded on first use
        self.run_dir = Path(cfg.out_dir) / cfg.name

    def setup(self, fabric: Any) -> None:
        super().setup(fabric)
        if self.ema is not None:
            self.ema.model.to(fabric.device)

    def _z(self, n: int, device: Any) -> torch.Tensor:
        return rank_rows(lambda m: torch.randn(m, unwrap(self.players["generator"]).latent_dim, device=device), n)

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        real = self.range.to_tanh(batch.x)
        G = self.players["generator"]
        with torch.no_grad():
            fake = G(self._z(real.shape[0], real.device))
        out = self.game.step(real, fake)
        if (step + 1) % self.cfg.players.n_critic == 0:
            fake = G(self._z(real.shape[0], real.device))
            g = self.g_objective(Outputs(out=fake), None, Batch(x=fake))["loss"]  # D frozen inside the gan term
            self.step_optimizer("generator", g)
            if self.ema is not None:
                self.ema.update(unwrap(G))
            self._g_loss = nan_guard(fake, g.detach())
        out["loss_g"] = self._g_loss if self._g_loss is not None else torch.zeros_like(out["loss_d"])
        out["loss"] = nan_guard(fake, out["loss_d"] + out["loss_g"])
        return out

    def eval_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else unwrap(self.players["generator"])

    def export_state(self, *, copy: bool = True, **metadata: Any):
        return generator_export_state(self.eval_model(), copy=copy, **metadata)

    def validate(self, loader: Any, device: Any) -> Dict[str, float]:
        """FID of ``eval.val_samples`` generated images against the validation images (lower is better)."""
        if self._val is None:
            feats, logits, _ = load_extractor(self.cfg.eval.extractor, self.spec)
            self._val = (feats.to(device), FeatureSet.from_batches(real_image_batches(loader.dataset, 500), feats.to(device),
                                                                   None, device))
        feats, real = self._val
        gen = self.eval_model()
        fake = FeatureSet.from_batches(generator_batches(gen, self.cfg.eval.val_samples, gen.latent_dim, self.cfg.eval.sample_seed + 1, 500, device),
                                       feats, None, device)
        return {"val/fid": fid_from_features(real, fake)}

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        save_epoch_grid(self, epoch)

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.model.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.ema is not None and "ema" in state:
            self.ema.model.load_state_dict(state["ema"])

    def finalize(self, run_dir: Any, data: Any, result: Any, device: Any) -> Dict[str, Any]:
        return gan_finalize(self, run_dir, data, result, device)
