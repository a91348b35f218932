"""The base of methods whose student is a generator distilled from a frozen teacher generator.

Not a method itself (no registration): ``gan-compression`` and later image-to-image students
subclass it. It owns what every generator student shares:

* the players: the teacher generator (frozen, checked against the data set's image shape) and the
  student generator with the objective of ``objective.student`` (default: pixel MSE to the teacher's image
  for the same input, Aguinaldo et al. 2019 Fig. 3), plus any term of the registry whose inputs exist
  for generators (images, named features; no labels, no input gradients);
* the inputs (:attr:`inputs`): ``latent`` = ``z ~ N(0, I)`` of the teacher's latent size, with
  ``players.latents=fresh`` (default) drawn fresh every step (the batch only gives the batch size, so such
  a student also runs data-free with ``data.transfer=none``), with ``players.latents=pool`` the fixed z of
  each transfer row (:func:`latent_pool`, indexed by ``batch.index``; the NoData rows when data-free), so
  that terms with per-example memories (CRD) may use ``index``; ``image`` = the batch's images
  (image-to-image students);
* :meth:`distill_step` (one student update; with a discriminator, the adversarial term through a
  frozen D), validation (MSE to the teacher on fixed inputs), a sample grid of fixed inputs after
  every epoch, export as a generator and the generative evaluation of :mod:`kdlab.games.gan_eval`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from torch import nn

from kdlab.config import ConfigError, choice
from kdlab.data.batch import Batch
from kdlab.engine import load_network, network_identity
from kdlab.games.base import Method, unwrap
from kdlab.games.gan_config import GanEvalConfig, check_eval_config
from kdlab.games.gan_eval import gan_finalize
from kdlab.games.gan_players import DataRange, build_gen, generator_export_state, nan_guard, save_epoch_grid
from kdlab.metrics.generative import generate_images
from kdlab.ranks import rank_rows

INPUTS = ("latent", "image")
#: ``players.latents``: a fresh z every step, or a fixed z per transfer row
LATENTS = ("fresh", "pool")
#: the latent pool's stream in ``SeedSequence([run seed, _POOL_STREAM])``: apart from the evaluation latents
#: (``torch.Generator().manual_seed(eval.sample_seed)``), so training never sees the z that FID/KID score
_POOL_STREAM = 0x1A7E27


def latent_pool(seed: int, rows: int, latent_dim: int) -> torch.Tensor:
    """The fixed latents of ``players.latents=pool``: ``[rows, latent_dim]`` z ~ N(0, I) on the CPU from a
    ``torch.Generator`` seeded by ``SeedSequence([seed, stream])`` (row i = the z of transfer row i)."""
    state = int(np.random.SeedSequence([int(seed), _POOL_STREAM]).generate_state(1)[0])
    return torch.randn(rows, latent_dim, generator=torch.Generator().manual_seed(state))


@dataclass
class GeneratorStudentConfig:
    """``players`` section of a generator student."""

    latents: str = choice("fresh", LATENTS)  # fresh z every step | pool: a fixed z per transfer row (CRD needs it)


class GeneratorStudentMethod(Method):
    """Frozen teacher generator -> student generator trained on the sum of the configured terms.

    Raises (at construction): ConfigError for a student that does not take the teacher's latent size,
    terms the generator cannot feed; GeneratorMismatchError for a teacher whose images do not fit.
    """

    kind = "generator"
    export_name = "student"
    selection_key = "val/mse_to_teacher"
    selection_mode = "min"
    Config = GeneratorStudentConfig
    Eval = GanEvalConfig
    default_objective = {"student": {"mse": {"weight": 1.0}}}
    #: ``latent`` (z sampled inside the method) or ``image`` (the batch's images are the inputs)
    inputs = "latent"

    @property
    def synthesizes(self) -> bool:  # type: ignore[override]
        return self.inputs == "latent"

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        check_eval_config(cfg.eval, cfg.data.max_test)
        teacher, self.teacher_path = load_network(cfg.teacher.checkpoint, spec, kind="generator",
                                                  hint="teacher.checkpoint=runs/<train-gan run>")
        if getattr(teacher, "input_kind", "latent") != self.inputs:
            raise ConfigError(f"teacher.checkpoint {self.teacher_path!r} holds a generator of {teacher.input_kind} inputs "
                              f"({teacher.arch}); method {cfg.method!r} distils generators of {self.inputs} inputs")
        if self.inputs == "latent":
            kw = dict(cfg.model.kwargs)
            if "latent_dim" in kw and int(kw["latent_dim"]) != teacher.latent_dim:
                raise ConfigError(f"model.kwargs.latent_dim = {kw['latent_dim']} differs from the teacher's latent_dim "
                                  f"{teacher.latent_dim}: the student must take the teacher's z")
            student = build_gen(cfg, spec, latent_dim=teacher.latent_dim)
            shape: tuple = (teacher.latent_dim,)
        else:
            student = build_gen(cfg, spec, inputs="image")
            shape = (spec.in_channels, spec.image_size, spec.image_size)
        self.latent_dim = teacher.latent_dim
        ctx = self.term_context(student, teacher, student_input=shape, teacher_input=shape)
        self.latent_pool = self._latent_pool(cfg)
        if self.inputs == "latent" and cfg.players.latents == "fresh":  # a fresh z is no row of the transfer set
            ctx.provides = ctx.provides - {"index"}
            ctx.why_not["index"] = ("with players.latents = 'fresh' each step draws new latents that are no rows of the "
                                    "transfer set; set players.latents=pool (a fixed z per row, indexed by batch.index)")
        self.extend_context(ctx, student, teacher)
        self.objective = self.add_student("student", student, self.build_objective(ctx))
        self.add_frozen("teacher", teacher)
        self.range = DataRange(spec)
        self.run_dir = Path(cfg.out_dir) / cfg.name

    def extend_context(self, ctx: Any, student: nn.Module, teacher: nn.Module) -> None:
        """Hook for subclasses: add to the terms' context before the objective is built (e.g. a
        discriminator the terms read, translation targets). Default: nothing."""

    # -- inputs --------------------------------------------------------------------------------
    def _latent_pool(self, cfg: Any) -> Optional[torch.Tensor]:
        """The fixed latents of ``players.latents=pool`` (None otherwise, or when built without data)."""
        if self.inputs != "latent" or cfg.players.latents != "pool" or self.transfer is None:
            return None
        if not self.transfer.indexed:
            raise ConfigError(f"players.latents = 'pool' draws z by batch.index, but the transfer source "
                              f"{cfg.data.transfer!r} gives no row indices; set players.latents=fresh")
        return latent_pool(cfg.seed, self.transfer.size, self.latent_dim)

    def student_inputs(self, batch: Batch) -> torch.Tensor:
        """The generators' inputs for one step: latents ``[B, latent_dim]`` (fresh, or the pool's rows
        ``batch.index``) or the batch's images."""
        if self.inputs == "image":
            return batch.x
        device = batch.x.device if batch.x is not None else self.fabric.device
        if self.cfg.players.latents == "pool":
            if self.latent_pool is None or batch.index is None:
                raise RuntimeError("players.latents = 'pool' needs the transfer source (built with it) and batch.index")
            self.latent_pool = self.latent_pool.to(device)  # once: a no-op when it is there already
            return self.latent_pool[batch.index.to(device)]
        return rank_rows(lambda n: torch.randn(n, self.latent_dim, device=device), len(batch))

    # -- the student step ------------------------------------------------------------------------
    def distill_step(self, inputs: torch.Tensor, batch: Batch,
                     before: Optional[Callable[[Any], Dict[str, torch.Tensor]]] = None,
                     after: Optional[Callable[[Any], Dict[str, torch.Tensor]]] = None) -> Dict[str, torch.Tensor]:
        """One student update on ``inputs`` with the objective's terms (the adversarial one, ``gan``, reads the
        discriminator frozen). ``before(student outputs)``, when given, runs after the student's forward pass
        and before its loss (e.g. the discriminator's step on the same images, pix2pix's order); its logs are
        returned too; ``after(student outputs)`` runs after the student's update (e.g. the discriminator's step
        on the same images, GAN-Compression's order). Returns the terms (``mse``, ``gan``...) and ``loss_g`` (the
        weighted total; NaN if the student made a NaN pixel)."""
        t = self.objective.teacher_outputs(self.frozen["teacher"], inputs, batch)
        s = self.players["student"](inputs)
        out = dict(before(s)) if before is not None else {}
        terms = self.student_terms("student", s, t, batch)
        total = terms.pop("loss")
        out.update({k: v.detach() for k, v in terms.items()})
        self.step_optimizer("student", total)
        out.update(self.update_terms("student", s, t, batch))
        if after is not None:
            out.update(after(s))
        out["loss_g"] = nan_guard(s.out, total.detach())
        return out

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        out = self.distill_step(self.student_inputs(batch), batch)
        out["loss"] = out["loss_g"]
        return out

    # -- evaluation and export -------------------------------------------------------------------
    def eval_model(self) -> nn.Module:
        return unwrap(self.players["student"]).net

    def export_state(self, *, copy: bool = True, **metadata: Any):
        return generator_export_state(self.eval_model(), copy=copy, **metadata)

    @torch.no_grad()
    def validate(self, loader: Any, device: Any) -> Dict[str, float]:
        """Mean squared error (in [-1, 1] units) between student and teacher images on 1,000 fixed inputs."""
        s = generate_images(self.eval_model(), 1000, self.latent_dim, self.cfg.eval.sample_seed + 1, 500, device)
        t = generate_images(self.frozen["teacher"], 1000, self.latent_dim, self.cfg.eval.sample_seed + 1, 500, device)
        return {"val/mse_to_teacher": float(((s - t) ** 2).mean()) * 4.0}

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        save_epoch_grid(self, epoch)

    def summary_extra(self) -> Dict[str, Any]:
        ident = network_identity(self.frozen["teacher"], self.teacher_path)
        return {"teacher": {"checkpoint": ident["checkpoint"], "sha256": ident["sha256"]}}

    def finalize(self, run_dir: Any, data: Any, result: Any, device: Any) -> Dict[str, Any]:
        return gan_finalize(self, run_dir, data, result, device, teacher=self.frozen["teacher"],
                            teacher_path=self.teacher_path)
