"""GAN compression by knowledge distillation (Aguinaldo et al. 2019, sec. 3, Fig. 3-4).

A small student generator ``G_s`` (depth scale factor ``model.kwargs.d``) learns from a frozen
teacher generator ``G_t`` (``teacher.checkpoint``, a ``kdlab train-gan`` run) for the SAME latent
batch ``z ~ N(0, I)``, drawn fresh at every step:

* MSE student (Fig. 3, eq. 3): ``L = mse_weight * mean (G_s(z) - G_t(z))^2`` (``adv_weight = 0``);
* joint student (Fig. 4, eq. 4): ``L = mse_weight * MSE + adv_weight * L_adv(D(G_s(z)))`` with a
  discriminator ``D`` trained on real images vs student samples by the chosen game (``loss.game``;
  the public reproduction: WGAN-GP, penalty 10, 3 critic steps per student step, Adam 2e-4 betas
  (0.5, 0.999), a = 0.3 i.e. ``mse_weight 0.3, adv_weight 0.7``). D starts from scratch (the paper
  does not say it is the teacher's discriminator).

The two weights are separate keys: 0 turns exactly that term off (unlike ``-(1-a) D + a MSE``).
With the joint loss, each step is one D step and every ``n_critic``-th step one student step; with
MSE only, every step is a student step and real images are not used.

Model selection: with a validation split, the epoch of lowest MSE to the teacher on fixed latents
(``val/mse_to_teacher``, 1,000 samples); the recipes use ``data.val_size = 0`` (last epoch).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn

from kdlab.engine import file_sha256
from kdlab.engine.generators import generator_metadata
from kdlab.losses import generator_mse
from kdlab.methods.base import METHODS, Method, unwrap
from kdlab.methods.gan_common import (
    Adversary,
    DataRange,
    GanGameConfig,
    build_disc,
    build_gen,
    check_eval_config,
    check_game_config,
    disc_optim_cfg,
    gan_finalize,
    load_teacher_generator,
    nan_guard,
)
from kdlab.metrics.generative import generate_images, save_grid


@METHODS.register("gan-compression")
class GANCompression(Method):
    """Student generator distilled from a frozen teacher generator: MSE (Fig. 3) or MSE + adversarial (Fig. 4)."""

    export_name = "student"
    selection_key = "val/mse_to_teacher"
    selection_mode = "min"

    @dataclass
    class Config(GanGameConfig):
        """``loss`` section of ``kdlab compress-gan``: the two weights, the joint loss's game, evaluation keys."""

        mse_weight: float = 1.0  # weight of the MSE to the teacher's image for the same z
        adv_weight: float = 0.0  # weight of the adversarial term (0 = the MSE student of Fig. 3)

    def __init__(self, cfg: Any, spec: Any) -> None:
        super().__init__(cfg, spec)
        lc = cfg.loss
        check_eval_config(lc, cfg.data.max_test)
        for k in ("mse_weight", "adv_weight"):
            if getattr(lc, k) < 0:
                raise ValueError(f"loss.{k} = {getattr(lc, k)} must be >= 0")
        if lc.mse_weight == 0 and lc.adv_weight == 0:
            raise ValueError("loss.mse_weight and loss.adv_weight are both 0: nothing to train; set at least one > 0")
        teacher, self.teacher_path = load_teacher_generator(cfg.teacher.checkpoint, spec)
        kw = dict(cfg.model.kwargs)
        if "latent_dim" in kw and int(kw["latent_dim"]) != teacher.latent_dim:
            raise ValueError(f"model.kwargs.latent_dim = {kw['latent_dim']} differs from the teacher's latent_dim "
                             f"{teacher.latent_dim}: the student must take the teacher's z")
        student = build_gen(cfg, spec, latent_dim=teacher.latent_dim)
        self.latent_dim = teacher.latent_dim
        self.add_player("student", student)
        self.add_frozen("teacher", teacher)
        self.adversarial = lc.adv_weight > 0
        if self.adversarial:
            disc_name = check_game_config(lc, cfg.model.name)
            self.adversary = Adversary(lc.game, lc)
            self.add_player("discriminator", build_disc(cfg, spec, disc_name, student.d), disc_optim_cfg(cfg))
        self.range = DataRange(spec)
        self.run_dir = Path(cfg.out_dir) / cfg.name
        self._last_student: Dict[str, torch.Tensor] = {}

    def student_step(self, z: torch.Tensor, D: Any = None) -> Dict[str, torch.Tensor]:
        """One student update on latents ``z``; returns the weighted total and the unweighted terms."""
        lc = self.cfg.loss
        with torch.no_grad():
            t_img = self.frozen["teacher"](z)
        s_img = self.players["student"](z)
        mse = generator_mse(s_img, t_img)
        total = lc.mse_weight * mse
        out = {"mse": mse.detach()}
        if D is not None:
            for p in D.parameters():
                p.requires_grad_(False)
            adv = self.adversary.g_loss(D, s_img)
            total = total + lc.adv_weight * adv
            out["adv"] = adv.detach()
        self.step_optimizer("student", total)
        if D is not None:
            for p in D.parameters():
                p.requires_grad_(True)
        out["loss_g"] = nan_guard(s_img, total.detach())
        return out

    def training_step(self, batch, step: int) -> Dict[str, torch.Tensor]:
        x, _ = batch
        n = x.shape[0]
        device = x.device
        if not self.adversarial:
            out = self.student_step(torch.randn(n, self.latent_dim, device=device))
            out["loss"] = out["loss_g"]
            return out
        real = self.range.to_tanh(x)
        D = self.players["discriminator"]
        with torch.no_grad():
            fake = self.players["student"](torch.randn(n, self.latent_dim, device=device))
        d_terms = self.adversary.d_loss(D, real, fake)
        self.step_optimizer("discriminator", d_terms["d"])
        self.adversary.after_step(unwrap(D))
        out = {("loss_d" if k == "d" else k): v.detach() for k, v in d_terms.items()}
        if (step + 1) % self.cfg.loss.n_critic == 0 or not self._last_student:
            self._last_student = self.student_step(torch.randn(n, self.latent_dim, device=device), D)
        out.update(self._last_student)
        out["loss"] = nan_guard(fake, out["loss_g"] + out["loss_d"])
        return out

    def eval_model(self) -> nn.Module:
        return unwrap(self.players["student"])

    def export_state(self, **metadata: Any):
        model = self.eval_model()
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return state, generator_metadata(model, **metadata)

    @torch.no_grad()
    def validate(self, loader: Any, device: Any) -> Dict[str, float]:
        """Mean squared error (in [-1, 1] units) between student and teacher images on 1,000 fixed latents."""
        s = generate_images(self.eval_model(), 1000, self.latent_dim, self.cfg.loss.sample_seed + 1, 500, device)
        t = generate_images(self.frozen["teacher"], 1000, self.latent_dim, self.cfg.loss.sample_seed + 1, 500, device)
        return {"val/mse_to_teacher": float(((s - t) ** 2).mean()) * 4.0}

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        if self.fabric is None or self.fabric.is_global_zero:
            gen = self.eval_model()
            dev = next(gen.parameters()).device
            imgs = generate_images(gen, self.cfg.loss.grid_n, self.latent_dim, self.cfg.loss.sample_seed, 256, dev)
            save_grid(imgs, self.run_dir / "samples" / f"epoch_{epoch + 1:03d}.png")

    def summary_extra(self) -> Dict[str, Any]:
        return {"teacher": {"checkpoint": self.teacher_path, "sha256": file_sha256(self.teacher_path)}}

    def finalize(self, run_dir: Any, data: Any, result: Any, device: Any) -> Dict[str, Any]:
        return gan_finalize(self, run_dir, data, result, device, teacher=self.frozen["teacher"],
                            teacher_path=self.teacher_path)
