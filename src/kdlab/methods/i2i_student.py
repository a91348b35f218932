"""Image-to-image students (VEM paper sec. 5, appendix A.2): a small translation generator distilled from a
frozen pix2pix / CycleGAN teacher by the terms of OMGD, GCC, GAN-Compression, CAT or CAGC, plus the
usual adversarial game.

``i2i-distill``: the student ``G^s`` (``model.name`` = ``unet`` | ``resnet_gen``, width ``model.kwargs.ngf``)
takes the source image ``batch.x`` [B, C_in, H, W] in [-1, 1], as the teacher ``G^t`` (``teacher.checkpoint``)
does, and learns from ``L = sum of objective.student`` (eqs. 12, 16, 19, 22, 24), the distillation terms and
the adversarial one (``gan``, weight 1 by default):

* the terms (``kdlab list terms``): ``l1_image``, ``ssim``, ``perceptual``, ``style``, ``tv``, ``channel_distill`` (OMGD);
  ``gcc`` (GCC); ``gc_distill`` (GAN-Compression); ``kernel_alignment`` (CAT); ``cagc`` (CAGC); ``lpips``; any
  other term whose inputs a generator has (``vem``, ``vid``, ``crd``...). Terms may compare with the
  teacher's image or, for paired data, the ground truth ``batch.target`` (``target: ground_truth``);
* ``L_GAN`` (the ``gan`` term): a PatchGAN discriminator D (``players.ndf``, ``players.n_layers``) trained on
  real = ``batch.target`` vs fake = the student's image by ``objective.discriminator`` (its ``gan`` term in the
  student's mode: vanilla = the non-saturating BCE game, each patch a score, pix2pix's GANLoss; lsgan).
  For paired data D is conditional, judging ``cat(x, image)`` (pix2pix); for unpaired data it judges the
  image alone (CycleGAN). Per step (pix2pix's order): the student's forward pass, one D step on the
  detached student image, one student step through the frozen D (``players.d_step: after``: the student's step
  first, through D before its update, then D's on the same images: GAN-Compression's ``optimize_parameters``,
  both gradients at the same D). ``objective.student.gan.weight = 0``: no D at all.
  The PatchGAN's depth follows the image size (:func:`kdlab.games.i2i_players.patchgan_depth`: 3 at 256 px,
  2 at 28 px, a map of patches; an explicit depth that leaves a 1x1 map is refused).
  The ``gcc`` term reads the TEACHER's discriminator (GCC's D^t, eq. 17): the teacher Pix2Pix run's PatchGAN
  (``players.teacher_disc``, null = ``teacher.checkpoint`` when it is a run directory), frozen, never updated.
  ``players.disc_gates``: GCC's selective activation discriminator (channel gates in the student's PatchGAN,
  player ``discriminator_gates`` trained by ``objective.discriminator_gates`` after each student step on the
  step's batch, :func:`kdlab.games.gan_players.gate_step`).
* the published offline students' starts (GAN-Compression's and CAT's CycleGAN scripts): ``players.disc_init``
  starts D from the teacher run's discriminator of the output domain (``restore_D_path``; ``teacher`` = the
  run of ``teacher.checkpoint``; CycleGAN's ``disc_b``, pix2pix's ``discriminator``), D's width, depth and
  norm then read off it; ``players.student_init: teacher`` starts a ``resnet_gen`` student from the
  teacher's strongest channels (``load_pretrained_weight``, :mod:`kdlab.models.weight_transfer`).

Validation (``val/mse_to_teacher``): the MSE between student and teacher images on the validation
inputs (in [-1, 1] units). After every epoch ``samples/epoch_NNN.png`` holds rows input | teacher | student
on the first ``eval.grid_n`` training rows. At the end (:func:`kdlab.games.i2i_eval.translation_finalize`):
the exported student scored on the test split beside its teacher (FID/KID, MAE/SSIM, domain accuracy),
its fidelity to the teacher and the compression ratios.

The teacher here is frozen, as in the offline algorithms; OMGD's online teachers are method ``omgd``
(:mod:`kdlab.methods.omgd`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, Dict, Optional

import torch
from torch import nn

from kdlab.config import ConfigError, bounded, choice
from kdlab.data.batch import Batch
from kdlab.data.transfer import TRANSFER_NONE
from kdlab.engine.optim import optim_with_lr
from kdlab.games.base import METHODS, Method, unwrap
from kdlab.games.gan_config import GanEvalConfig
from kdlab.games.gan_players import (DiscriminatorGame, add_discriminator, count_gate_epoch, discriminator_state,
                                       gate_step)
from kdlab.games.generator_student import GeneratorStudentConfig, GeneratorStudentMethod
from kdlab.games.i2i_eval import grid_examples, translation_finalize, translation_grid
from kdlab.games.i2i_players import build_patchgan, patchgan_arch
from kdlab.models.gates import GateSet, channel_gates
from kdlab.models.weight_transfer import transfer_teacher_channels
from kdlab.terms import CriticView

#: ``players.disc_norm``: auto = BatchNorm for paired (pix2pix), InstanceNorm for unpaired data (CycleGAN)
DISC_NORMS = ("auto", "batch", "instance")
#: ``players.conditional``: auto = a conditional D for paired data only
CONDITIONAL = ("auto", "yes", "no")
#: ``players.student_init``: random (pix2pix's N(0, 0.02)) | teacher (GAN-Compression's load_pretrained_weight)
STUDENT_INITS = ("random", "teacher")
#: ``players.d_step``: D's update before the student's (pix2pix, CAT) or after it, both gradients at the same D
D_STEPS = ("before", "after")
#: the teacher run's players that judge its output domain, in the order looked for (pix2pix, CycleGAN's G: A -> B)
TEACHER_DISCS = ("discriminator", "disc_b")


@dataclass
class I2IEvalConfig(GanEvalConfig):
    """``eval`` section of ``i2i-distill``: the generative evaluation's keys and the validation's size."""

    val_inputs: int = bounded(1000, ge=1)  # validation inputs scored per epoch (at most)


@dataclass
class I2IStudentConfig(GeneratorStudentConfig):
    """``players`` section of ``i2i-distill``: the terms, the adversarial game and the evaluation keys."""

    ndf: Optional[int] = bounded(None, ge=1, optional=True)  # PatchGAN width; null: disc_init's, else 64 (pix2pix)
    # PatchGAN stride-2 layers; null: disc_init's, else follows the image size (patchgan_depth)
    n_layers: Optional[int] = bounded(None, ge=1, optional=True)
    disc_norm: str = choice("auto", DISC_NORMS)  # auto: disc_init's, else batch (paired) | instance (unpaired)
    # D from a teacher run's output-domain discriminator (restore_D_path); teacher = the run of teacher.checkpoint
    disc_init: Optional[str] = None
    student_init: str = choice("random", STUDENT_INITS)  # teacher: the teacher's strongest channels (load_pretrained_weight)
    d_step: str = choice("before", D_STEPS)  # D's update before the student's (pix2pix, CAT) | after (GAN-Compression)
    conditional: str = choice("auto", CONDITIONAL)  # D judges cat(x, image) (pix2pix) or the image alone
    disc_lr: Optional[float] = bounded(None, gt=0, optional=True)  # null: optim.lr
    # the Pix2Pix teacher run whose PatchGAN terms read frozen (GCC's D^t, eq. 17); null: teacher.checkpoint if a run dir
    teacher_disc: Optional[str] = None
    # GCC's selective activation discriminator: channel gates of this threshold in the PatchGAN (GCC's default 0.5)
    disc_gates: Optional[float] = bounded(None, ge=0, lt=1, optional=True)
    arch_lr: float = bounded(1e-4, gt=0)  # Adam rate of the gates (GCC's arch_lr)


@METHODS.register("i2i-distill")
class I2IStudent(GeneratorStudentMethod):
    """Frozen image-to-image teacher -> student translation generator (terms + PatchGAN game).

    Raises (at construction): ConfigError for a latent generator, a data set that is no translation
    task, terms the method cannot feed, nothing to train, or a discriminator with no real images; warns
    (UserWarning) when the student is wider than its teacher (``ngf``).
    """

    inputs = "image"
    Config = I2IStudentConfig
    Eval = I2IEvalConfig
    objectives = {"student": "student", "discriminator": "discriminator", "discriminator_gates": "discriminator_gates"}
    # only the game by default: a default distillation term would be merged into every config's terms (name each
    # term you want); objective.student.gan.weight=0: no discriminator at all
    default_objective = {"student": {"gan": {"weight": 1.0, "mode": "vanilla"}},
                         "discriminator": {"gan": {"weight": 1.0, "mode": "vanilla"}}}
    moved = {"adv_weight": "objective.student.gan.weight"}
    teacher_cache_unsupported = "distils on translation batches with a discriminator in the loop"

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        lc = cfg.players
        self.pairing = getattr(spec, "pairing", None)
        if self.pairing not in ("paired", "unpaired"):
            raise ConfigError(f"method 'i2i-distill' needs an image-to-image translation data set (paired or unpaired); "
                              f"data set {spec.name!r} is not one")
        gan = cfg.objective.student.get("gan")
        self.adversarial = gan is not None and float(gan.weight) > 0
        if self.adversarial and cfg.data.transfer == TRANSFER_NONE:
            raise ConfigError("method 'i2i-distill' reads its inputs from the batches; data.transfer = 'none' gives none")
        if lc.disc_init and not self.adversarial:
            raise ConfigError(f"players.disc_init = {lc.disc_init!r} starts the discriminator, but objective.student has no "
                              "gan term, so there is none; set objective.student.gan.weight > 0 or players.disc_init=null")
        self.conditional = (lc.conditional == "yes") or (lc.conditional == "auto" and self.pairing == "paired")
        self._disc: Optional[nn.Module] = None
        self.gate_objective = None
        if lc.disc_gates is not None and not self.adversarial:
            raise ConfigError(f"players.disc_gates = {lc.disc_gates} gates the student's discriminator, but "
                              "objective.student.gan.weight = 0, so there is none; set players.disc_gates=null")
        super().__init__(cfg, spec, transfer)
        if lc.student_init == "teacher":
            try:
                transfer_teacher_channels(self.frozen["teacher"], self.eval_model())
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if not len(self.objective):
            raise ConfigError("objective.student has no term with a weight > 0: nothing to train")
        if self._disc is not None:
            d = cfg.objective.discriminator.get("gan")
            if d is None or float(d.weight) == 0 or d.mode != gan.mode:
                raise ConfigError(f"objective.discriminator.gan must play the student's game (mode {gan.mode!r}, weight > 0); "
                                  f"got {dict(d) if d is not None else None}")
            self.game = DiscriminatorGame(self, self.plain_objective(self._ctx_of("discriminator"), "discriminator"))
            self.gate_objective = add_discriminator(self, self._disc, optim_with_lr(cfg.optim, lc.disc_lr, "players.disc_lr"),
                                                    self._ctx_of("discriminator_gates"))
        s_ngf, t_ngf = getattr(self.eval_model(), "ngf", None), getattr(self.frozen["teacher"], "ngf", None)
        if s_ngf is not None and t_ngf is not None and s_ngf > t_ngf:
            warnings.warn(f"the student (ngf {s_ngf}) is wider than its teacher (ngf {t_ngf}): that is no compression",
                          UserWarning, stacklevel=2)

    # -- the discriminator, as a player and as the terms' critic -----------------------------------
    def extend_context(self, ctx: Any, student: nn.Module, teacher: nn.Module) -> None:
        self._teacher_critic(ctx, student)
        if not self.adversarial:
            ctx.why_not["critic"] = "there is no discriminator: objective.student.gan.weight = 0"
            return
        lc, spec = self.cfg.players, self.spec
        c_out = student.out_channels
        cond = spec.in_channels if self.conditional else 0
        state, arch = None, {}
        if lc.disc_init:
            state, _ = discriminator_state(self._disc_run(lc.disc_init), TEACHER_DISCS)
            arch = patchgan_arch(state)
        norm = lc.disc_norm if lc.disc_norm != "auto" else arch.get(
            "norm", "batch" if self.pairing == "paired" else "instance")
        n_layers = lc.n_layers if lc.n_layers is not None else arch.get("n_layers")
        self._disc = build_patchgan(cond + c_out, spec.image_size, lc.ndf or arch.get("ndf", 64), n_layers, norm,
                                    lc.disc_gates)
        if state is not None:
            try:
                self._disc.load_state_dict(state)
            except RuntimeError as exc:
                raise ConfigError(f"players.disc_init = {lc.disc_init!r}: the teacher's discriminator {arch} (conditional: "
                                  f"{self.conditional}) does not fit the configured one (players.ndf / n_layers / "
                                  f"disc_norm / conditional / disc_gates): {str(exc).splitlines()[0]}") from None
        gates = GateSet(channel_gates(self._disc)) if lc.disc_gates is not None else None
        ctx.provides = ctx.provides | {"critic"}
        ctx.critic = CriticView(lambda: unwrap(self.players["discriminator"]) if "discriminator" in self.players
                                else self._disc, (c_out, spec.image_size, spec.image_size), cond,
                                trained=lambda: self.players["discriminator"])
        given = frozenset({"critic"} | ({"teacher_critic"} & ctx.provides))
        game = SimpleNamespace(epochs=int(self.cfg.trainer.epochs), gates=gates)
        self._ctx_of = lambda role: replace(ctx, role=role, provides=given, game=game)

    def _teacher_critic(self, ctx: Any, student: nn.Module) -> None:
        """GCC's D^t: the teacher Pix2Pix run's discriminator (its width, depth and norm read off its weights,
        :func:`patchgan_arch`), frozen, as ``ctx.teacher_critic``, when a term reads it."""
        from pathlib import Path

        from kdlab.terms import TERMS

        lc = self.cfg.players
        wanted = any("teacher_critic" in TERMS.get(str(n)).requires
                     for n, v in self.cfg.objective.student.items() if float(v.weight) > 0)
        run = lc.teacher_disc or (self.cfg.teacher.checkpoint if Path(self.cfg.teacher.checkpoint).is_dir() else None)
        if not (wanted and run):
            ctx.why_not["teacher_critic"] = (f"teacher.checkpoint = {self.cfg.teacher.checkpoint!r} is no Pix2Pix run "
                                             "directory; set players.teacher_disc=<the teacher's run>")
            return
        state, _ = discriminator_state(run, TEACHER_DISCS, key="players.teacher_disc")
        arch = patchgan_arch(state)  # the teacher's own width, depth and norm
        cond = self.spec.in_channels if self.conditional else 0
        size = self.spec.image_size
        disc = build_patchgan(cond + student.out_channels, size, arch["ndf"], arch["n_layers"], arch["norm"])
        try:
            disc.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"players.teacher_disc = {run!r}: the teacher's discriminator {arch} (conditional: "
                              f"{self.conditional}) does not fit this task: {str(exc).splitlines()[0]}") from None
        self.add_frozen("teacher_discriminator", disc)
        ctx.provides = ctx.provides | {"teacher_critic"}
        ctx.teacher_critic = CriticView(lambda: self.frozen["teacher_discriminator"], (student.out_channels, size, size),
                                        cond)

    def _disc_run(self, disc_init: str) -> str:
        """The run whose discriminator starts D: ``teacher`` = the run of ``teacher.checkpoint`` (a run directory,
        or the directory of its exported ``.safetensors``), else ``disc_init`` itself."""
        from pathlib import Path

        if disc_init != "teacher":
            return disc_init
        path = Path(self.cfg.teacher.checkpoint)
        return str(path if path.is_dir() else path.parent)

    # -- the game --------------------------------------------------------------------------------
    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        x = batch.x
        if not self.adversarial:
            out = self.distill_step(x, batch)
            out["loss"] = out["loss_g"]
            return out
        if batch.target is None:
            raise ValueError("objective.student.gan trains the discriminator on real output-domain images, but the batch "
                             "has no batch.target")
        cond = x if self.conditional else None
        pair = (lambda img: img) if cond is None else (lambda img: torch.cat([cond, img], 1))  # noqa: E731

        def d_step(s):
            return self.game.step(pair(batch.target), pair(s.out.detach()))

        if self.cfg.players.d_step == "after":  # GAN-Compression: the student's loss reads D before D's step
            out = self.distill_step(x, batch, after=d_step)
        else:
            out = self.distill_step(x, batch, before=d_step)
        out["loss"] = out["loss_g"] + out["loss_d"]  # loss_g is NaN when the student made a NaN pixel
        if self.gate_objective is not None:  # GCC's gates after the student's step (its code: on a validation batch)
            with torch.no_grad():
                s_img, t_img = self.players["student"](x).out, self.frozen["teacher"](x)
            out.update(gate_step(self, s_img, t_img, batch))
        return out

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, loader: Any, device: Any) -> Dict[str, float]:
        """MSE between student and teacher images (in [-1, 1] units) on up to ``eval.val_inputs`` validation inputs."""
        student, teacher = self.eval_model(), self.frozen["teacher"]
        was = student.training
        student.eval()
        total, n = 0.0, 0
        try:
            for batch in loader:
                x = batch.x.to(device)[: self.cfg.eval.val_inputs - n]
                total += float(((student(x) - teacher(x)) ** 2).mean()) * len(x)
                n += len(x)
                if n >= self.cfg.eval.val_inputs:
                    break
        finally:
            student.train(was)
        return {"val/mse_to_teacher": total / max(n, 1)}

    def on_fit_start(self, train_set: Any, run_dir: Any, batch_sizes: Any) -> None:
        self.grid_batch = grid_examples(train_set, self.cfg.eval.grid_n)  # fixed inputs of the epoch grids

    def on_epoch_end(self, epoch: int) -> None:
        Method.on_epoch_end(self, epoch)  # the LR schedules; not the latent sample grid of the generator base
        count_gate_epoch(self, epoch)
        translation_grid(self, epoch)

    def summary_extra(self) -> Dict[str, Any]:
        out = super().summary_extra()
        objective = unwrap(self.players["student"]).objective
        records = {name: rec for name, term in objective.terms.items() if (rec := term.record())}
        if records:
            out["terms"] = records
        out["pairing"] = self.pairing
        out["discriminator"] = ({"conditional": self.conditional, **dict(self._disc.arch_kwargs)}
                                if self._disc is not None else None)
        return out

    def finalize(self, run_dir: Any, data: Any, result: Any, device: Any) -> Dict[str, Any]:
        return translation_finalize(self, run_dir, data, result, device, teacher=self.frozen["teacher"],
                                    teacher_path=self.teacher_path)
