"""OMGD with its online teachers (Ren et al., ICCV 2021, "Online Multi-Granularity Distillation for GAN
Compression"; VEM paper ``papers/003`` appendix A.2.1, eqs. 12-15), on paired image-to-image data.

``omgd``: two teachers are trained online from scratch beside the student, which never sees a discriminator:

* ``teacher_wide`` (``players.wide``: a wider U-Net, ngf 64) and ``teacher_deep`` (``players.deep``: OMGD's deeper
  U-Net ``unet_deep``, ngf 16), each playing the pix2pix game against ONE shared conditional PatchGAN
  (``players.ndf`` 128, BatchNorm): ``objective.teacher_wide`` / ``objective.teacher_deep`` = ``gan`` (hinge,
  weight 1) + ``l1_image`` to the ground truth (weight 100); ``objective.discriminator`` = ``gan`` (hinge, weight
  0.5), its loss summed over the two teachers' fakes;
* ``student`` (``model``, ngf 16) learns only from the teachers' images and features (multi-granularity):
  ``objective.student`` is evaluated against the wide teacher (its images and, for ``channel_distill``, its four
  mixed encoder/decoder activations) and again against the deep teacher's images, and the two are summed, as
  the code's loop over ``Tfake_Bs``. Terms that read the generators' features or own trainable parts
  (``channel_distill``, ``vid``, ``crd``, ``vem``...) take the wide teacher only, as the code's ``calc_CD_loss``.

Per step (bytedance/OMGD ``distillers/multiteacher_distiller.py``, ``MultiTeacherDistiller.optimize_parameters``):
one forward pass of the three generators; every ``players.n_dis`` steps the teachers' losses through the
discriminator as it was before its update, each teacher's Adam step, then the discriminator's step on the
(detached) teachers' images; then the student's step on the teachers' detached outputs of that same pass.

Validation (``val/mae``, selection min): the student's MAE to the ground truth, [0, 1] pixel units. The end
of the run scores the student beside the wide teacher (:func:`kdlab.games.i2i_eval.translation_finalize`).

The frozen single teacher (offline distillation from a trained pix2pix) is method ``i2i-distill`` with the same
student objective (recipe ``i2i_omgd_frozen.yaml``). Unpaired data: OMGD's CycleGAN distiller trains one online
CycleGAN teacher; not implemented here (``i2i-distill`` with a frozen CycleGAN teacher instead).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, Optional

import torch
from omegaconf import OmegaConf

from kdlab.config import ConfigError, bounded, choice
from kdlab.data.batch import Batch
from kdlab.engine.optim import optim_with_lr
from kdlab.games.base import METHODS, unwrap
from kdlab.games.gan_players import nan_guard
from kdlab.games.i2i_eval import mae_to_target, translation_finalize
from kdlab.games.i2i_players import TranslationEvalConfig, build_image_generator, build_patchgan, check_translation_data
from kdlab.games.translation_teacher import TranslationTeacher
from kdlab.terms import TERMS, Objective, Outputs
from kdlab.terms.objective import network_outputs


@dataclass
class TeacherNet:
    """A teacher generator of ``players``: registered ``name`` with ``kwargs`` (e.g. ``ngf``)."""

    name: str = "unet"
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class OMGDConfig:
    """``players`` section of ``omgd``: the two online teachers, the shared discriminator, the update ratio."""

    wide: TeacherNet = field(default_factory=lambda: TeacherNet("unet", {"ngf": 64}))  # OMGD unet_256, ngf 64
    deep: TeacherNet = field(default_factory=lambda: TeacherNet("unet_deep", {"ngf": 16}))  # unet_deepest_256, ngf 16
    ndf: int = bounded(128, ge=1)  # OMGD's --ndf default 128
    n_layers: Optional[int] = bounded(None, ge=1, optional=True)  # PatchGAN stride-2 layers; null: 3, fewer on small images
    disc_norm: str = choice("batch", ("batch", "instance"))  # OMGD --norm batch (edges2shoes script)
    n_dis: int = bounded(1, ge=1)  # the teachers and D update every n_dis steps (OMGD --n_dis, 1 on edges2shoes)
    disc_lr: Optional[float] = bounded(None, gt=0, optional=True)  # null: optim.lr


@METHODS.register("omgd")
class OMGD(TranslationTeacher):
    """OMGD: a student distilled from a wider and a deeper teacher trained online (paired data).

    Raises (at construction): ConfigError for unpaired or classification data, a teacher that is no image
    generator, objectives without their game, or a student objective with nothing to train.
    """

    role = "student"
    export_name = "student"
    selection_key = "val/mae"
    selection_mode = "min"
    Config = OMGDConfig
    Eval = TranslationEvalConfig
    objectives = {"student": "student", "teacher_wide": "generator", "teacher_deep": "generator",
                  "discriminator": "discriminator"}
    _teacher = {"gan": {"weight": 1.0, "mode": "hinge"}, "l1_image": {"weight": 100.0, "target": "ground_truth"}}
    default_objective = {"teacher_wide": _teacher, "teacher_deep": _teacher,
                         "discriminator": {"gan": {"weight": 0.5, "mode": "hinge"}}}
    teacher_cache_unsupported = "trains its teachers online"

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        check_translation_data(spec, "omgd", "paired")
        lc = cfg.players
        c_in, c_out, size = spec.in_channels, spec.out_channels, spec.image_size
        nets = {p: self._teacher_net(k, c_in, c_out, size) for p, k in (("teacher_wide", "wide"), ("teacher_deep", "deep"))}
        student = build_image_generator(cfg, c_in, c_out, size)
        disc = build_patchgan(c_in + c_out, size, lc.ndf, lc.n_layers, lc.disc_norm)
        self.g_objectives = {}
        for p, net in nets.items():
            self.g_objectives[p], d_objective = self.game_objectives(net, "discriminator", condition=c_in, player=p)
        self.d_objective = d_objective
        # the student: its terms against the wide teacher, then the image terms again against the deep one
        ctx = self.term_context(student, nets["teacher_wide"], kind="generator")
        self.objective = self.add_student("student", student, self.build_objective(ctx))
        if not len(self.objective):
            raise ConfigError("objective.student has no term with a weight > 0: nothing to train")
        self.deep_objective = self._deep_objective(nets["teacher_deep"], ctx)
        for p, net in nets.items():
            self.add_player(p, net)
        self.add_player("discriminator", disc, optim_with_lr(cfg.optim, lc.disc_lr, "players.disc_lr"))

    def _teacher_net(self, key: str, c_in: int, c_out: int, size: int) -> torch.nn.Module:
        """The online teacher ``players.<key>`` (an image generator). Raises ConfigError naming the key."""
        net = dict(getattr(self.cfg.players, key))
        try:
            return build_image_generator(OmegaConf.create({"model": net}), c_in, c_out, size)
        except (ConfigError, ValueError, TypeError) as exc:
            raise ConfigError(f"players.{key} = {net}: {str(exc).replace('model.name', f'players.{key}.name')}") from None

    def _deep_objective(self, deep: Any, ctx: Any) -> Objective:
        """``objective.student``'s terms that compare images only (no generator features, no trainable parts of their
        own), built against the deep teacher: the second half of the multi-granularity sum."""
        names = [n for n, t in self.objective.terms.items()
                 if "features" not in TERMS.get(n).requires and not any(True for _ in t.parameters()) and not t.players()]
        cfg = {n: self.cfg.objective.student[n] for n in names}
        return self.build_objective(replace(ctx, teacher=deep), terms=cfg)

    def eval_model(self) -> torch.nn.Module:
        return unwrap(self.players["student"]).net

    # -- one step: the teachers' game, then the student ------------------------------------------------
    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        x, y = batch.x, batch.target
        if y is None:
            raise ValueError("method 'omgd' trains its teachers on ground-truth images, but the batch has no batch.target")
        wide = network_outputs(self.players["teacher_wide"], x, self.objective.teacher_features)
        deep = self.players["teacher_deep"](x)
        s = self.players["student"](x)
        out: Dict[str, torch.Tensor] = {}
        if step % int(self.cfg.players.n_dis) == 0:
            out.update(self._teachers_step(x, y, batch, wide.out, deep))
        t_wide = Outputs(out=wide.out.detach(), features={k: v.detach() for k, v in wide.features.items()}, x=x)
        t_deep = Outputs(out=deep.detach(), x=x)
        terms = self.student_terms("student", s, t_wide, batch)
        deep_terms = self.deep_objective(s, t_deep, batch) if len(self.deep_objective) else {}
        total = terms.pop("loss") + (deep_terms.pop("loss") if deep_terms else 0.0)
        self.step_optimizer("student", total)
        out.update({k: v.detach() for k, v in terms.items()})
        out.update({f"deep/{k}": v.detach() for k, v in deep_terms.items()})
        out.update(self.update_terms("student", s, t_wide, batch))
        out["loss_g"] = nan_guard(s.out, total.detach())
        out["loss"] = out["loss_g"] + out.get("loss_teachers", 0.0)
        return out

    def _teachers_step(self, x: torch.Tensor, y: torch.Tensor, batch: Batch, wide: torch.Tensor,
                       deep: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Each teacher's step on its game through D as it is (frozen inside ``gan``), then D's step on both
        teachers' detached images: the code's order, where D's gradient and the teachers' are both taken before
        any update."""
        out: Dict[str, torch.Tensor] = {}
        total = x.new_zeros(())
        for p, img in (("teacher_wide", wide), ("teacher_deep", deep)):
            terms = self.g_objectives[p](Outputs(out=img, x=x), None, batch)
            self.step_optimizer(p, terms["loss"])
            out.update({f"{p}/{k}": v.detach() for k, v in terms.items() if k != "loss"})
            total = total + terms["loss"].detach()
        D = self.players["discriminator"]
        real = torch.cat([x, y], 1)
        d_loss = x.new_zeros(())
        for p, img in (("teacher_wide", wide), ("teacher_deep", deep)):
            fake = torch.cat([x, img.detach()], 1)
            terms = self.d_objective(Outputs(out=D(fake), x=fake), Outputs(out=D(real), x=real), Batch(x=fake))
            d_loss = d_loss + terms["loss"]
        self.step_optimizer("discriminator", d_loss)
        out["loss_d"] = d_loss.detach()
        out["loss_teachers"] = total
        return out

    # -- evaluation ----------------------------------------------------------------------------------
    def validate(self, loader: Any, device: Any) -> Dict[str, float]:
        """``val/mae``: the student's mean absolute error to the ground truth in [0, 1] pixel units."""
        return {"val/mae": mae_to_target(self.eval_model(), loader, device)}

    def summary_extra(self) -> Dict[str, Any]:
        out = super().summary_extra()
        out["teachers"] = {p: {"arch": unwrap(self.players[p]).arch, **dict(unwrap(self.players[p]).arch_kwargs)}
                           for p in ("teacher_wide", "teacher_deep")}
        return out

    def finalize(self, run_dir: Any, data: Any, result: Any, device: Any) -> Dict[str, Any]:
        """Export both online teachers as they ended (``teacher_wide.safetensors``, ``teacher_deep.safetensors``),
        then the student's evaluation beside the wide teacher."""
        import copy
        from pathlib import Path

        from kdlab.engine.generators import save_generator

        paths = {p: str(save_generator(copy.deepcopy(unwrap(self.players[p])).cpu().eval(), Path(run_dir) / f"{p}.safetensors",
                                       data=self.cfg.data.name)) for p in ("teacher_wide", "teacher_deep")}
        return translation_finalize(self, run_dir, data, result, device, teacher=unwrap(self.players["teacher_wide"]),
                                    teacher_path=paths["teacher_wide"])
