"""The synthesizer: a generator (and optionally a discriminator) that makes the student's transfer images,
``data.transfer: synth`` for every classifier student method. Not a method itself.

Following Fast-Datafree, one object with two calls:

* :meth:`Synthesizer.synthesize` updates the players of the synthesis on a transfer batch: a
  discriminator step on ``(real, G(z))`` when there is a discriminator (its loss = ``objective.discriminator``),
  then a generator step on the same ``G(z)`` whose loss is ``objective.generator``: the weighted sum of
  registered terms (``kdlab list terms``: ``adversarial``, ``align``, ``entropy_balance``, ``one_hot``,
  ``activation``, ``bn_prior``, ``gan``, or a term of your own), computed on the frozen teacher's outputs
  on ``G(z)`` (and the student's, with its parameters frozen, for terms that need them);
* :meth:`Synthesizer.sample` gives a batch of synthetic images for the student, without a graph.

The data-free methods of the literature are recipes of this one synthesizer (``kdlab list recipes``):
DFAD (``adversarial`` in L1 mode), DAFL (``one_hot`` + ``activation`` + ``entropy_balance``), DFQ /
DeepInversion (``bn_prior`` + ``one_hot`` + ``entropy_balance`` + ``adversarial``), and MosaicKD (a patch
discriminator on out-of-domain images ``data.synth_real``, ``adversarial`` + ``align`` + ``gan`` +
``entropy_balance``).

One student step of a method with a synthesizer on a transfer batch ``b`` (:meth:`step`):

1. every ``players.synth_every``-th step (and the first), ``players.synth_steps`` syntheses on ``b``;
2. the student's batch ``x = cat(sample(n), b.x)`` (``b.x`` only with ``data.synth_real``: the real
   images are the discriminator's real data and half of each student batch), ``n = players.synth_batch``
   (default ``data.batch_size``); such batches have no labels and no row indices;
3. the method's own step on ``x``.

What an epoch is (``players.epoch_pass``, with ``data.synth_real``): ``discriminator`` (default, the published
MosaicKD loop, zju-vipa/MosaicKD ``kd_mosaic.py`` ``train``): one pass of the discriminator's real batches over
the OOD set, each followed by ``synth_every`` student steps on fresh OOD batches, so an epoch of ``n`` OOD
images in batches of B runs ``ceil(n / B)`` syntheses and ``synth_every * ceil(n / B)`` student steps (the loop
is served the OOD set ``synth_every`` times per epoch, :class:`kdlab.data.transfer.EpochPasses`);
``student``: one pass of the student's batches (``synth_every`` times fewer student steps and syntheses per
epoch). Without ``data.synth_real`` an epoch is ``data.steps_per_epoch`` student steps either way.

``players.train_generator: false`` (a control, not a method): the generator keeps its initial weights, no
discriminator or generator step runs, and the student learns from ``cat(G_0(z), OOD batch)``: what the OOD
images plus an untrained generator's images give without mosaicking.

The generator outputs images in its ``output_range``; they are mapped to [0, 1] and normalised with the
teacher domain's mean/std, so the teacher sees what its own data would look like. The networks stay in
train mode during the generator step (BatchNorm statistics of the student and D see G(z), as in the
published code).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from kdlab.config import ConfigError, OptimConfig, bounded, choice
from kdlab.data.batch import Batch
from kdlab.data.transfer import TRANSFER_SYNTH
from kdlab.engine import unwrap
from kdlab.games.gan_players import nan_guard
from kdlab.models.base import frozen
from kdlab.models.gan import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator, sample_latent
from kdlab.ranks import rank_rows
from kdlab.terms import CriticView, Outputs, TermContext
from kdlab.terms.objective import forward_features


#: ``players.epoch_pass``: an epoch is one pass of the discriminator over ``data.synth_real`` (MosaicKD's code:
#: ``synth_every`` student steps per OOD batch) or one pass of the student's batches
EPOCH_PASSES = ("discriminator", "student")


def epoch_passes(cfg: Any) -> int:
    """How many times an epoch serves the transfer source: ``players.synth_every`` for a synthesizer with real images
    (``data.synth_real``) whose epoch is the discriminator's pass (``players.epoch_pass: discriminator``), else 1."""
    data, pc = cfg.data, cfg.get("players") or {}
    if data.transfer != TRANSFER_SYNTH or data.synth_real is None or pc.get("epoch_pass", "discriminator") != "discriminator":
        return 1
    return int(pc.get("synth_every", 5))


def _adam() -> OptimConfig:
    # MosaicKD / DFAD / DAFL code: Adam 1e-3, betas (0.5, 0.999) for the generator and MosaicKD's D
    return OptimConfig(name="adam", lr=1e-3, betas=[0.5, 0.999], weight_decay=0.0, scheduler="cosine")


@dataclass
class SynthConfig:
    """The ``players`` keys of a run whose transfer source is ``synth``."""

    generator: str = "mosaic"  # a registered generator (kdlab list generators)
    generator_kwargs: Dict[str, Any] = field(default_factory=dict)
    latent_dim: int = bounded(100, ge=1)  # nz
    g_optim: OptimConfig = field(default_factory=_adam)
    discriminator: Optional[str] = None  # e.g. patch (MosaicKD) or dcgan (one logit per image); needs data.synth_real
    disc_kwargs: Dict[str, Any] = field(default_factory=dict)
    d_optim: OptimConfig = field(default_factory=_adam)
    synth_every: int = bounded(5, ge=1)  # student steps per synthesis
    synth_steps: int = bounded(1, ge=1)  # generator updates per synthesis
    synth_batch: Optional[int] = bounded(None, ge=1, optional=True)  # synthetic images per student step
    epoch_pass: str = choice("discriminator", EPOCH_PASSES)  # with synth_real: whose pass over it is an epoch
    train_generator: bool = True  # false: a frozen untrained generator (the control that isolates mosaicking)


#: the players a synthesizer adds to a method's objectives (name -> role); ``discriminator`` only with one
SYNTH_ROLES = {"generator": "generator", "discriminator": "discriminator"}


class Synthesizer:
    """The generator (player ``generator``), the optional discriminator (``discriminator``) and their
    objectives, registered on ``method``; see the module docstring.

    Args:
        method: the host method (its config, data spec, ``add_player`` and ``step_optimizer``).
        teacher: the frozen teacher network.
        student: returns the student network (unwrapped: the generator's step back-propagates through it
            without DDP's gradient hooks, with its parameters frozen).

    Raises (at construction): ConfigError for an unknown generator or discriminator, a generator whose
    images do not fit the teacher (names both shapes), a discriminator without ``data.synth_real`` or whose
    output is not ``[B]`` / ``[B, 1, h, w]``, an empty generator or discriminator objective, or objective
    terms with trainable parts (not supported for these players).
    """

    def __init__(self, method: Any, teacher: nn.Module, student: Callable[[], nn.Module]) -> None:
        cfg, spec = method.cfg, method.spec
        pc = cfg.players
        self.method, self.teacher, self.student = method, teacher, student
        self.latent_dim = int(pc.latent_dim)
        self.every, self.steps = int(pc.synth_every), int(pc.synth_steps)
        self.batch_size = int(pc.synth_batch or cfg.data.batch_size)
        self.mix_real = cfg.data.synth_real is not None
        image = (spec.in_channels, spec.image_size, spec.image_size)
        if pc.generator not in GENERATORS:
            raise ConfigError(f"players.generator = {pc.generator!r}; accepted: {', '.join(GENERATORS.names())}")
        gen = build_generator(pc.generator, out_channels=spec.in_channels, image_size=spec.image_size,
                              latent_dim=self.latent_dim, **dict(pc.generator_kwargs))
        if tuple(gen.output_shape) != image:
            raise ConfigError(f"players.generator {pc.generator!r} makes images {tuple(gen.output_shape)}; the teacher "
                              f"takes {image}")
        g_optim = pc.g_optim
        if not pc.train_generator:  # never stepped: no schedule to advance (checkpointed as a player all the same)
            from omegaconf import OmegaConf

            g_optim = OmegaConf.merge(pc.g_optim, {"scheduler": "none"})
        method.add_player("generator", gen, g_optim)
        self.has_disc = pc.discriminator is not None
        if self.has_disc:
            method.add_player("discriminator", self._build_disc(pc, spec, image, self.mix_real), pc.d_optim)
        critic = CriticView(lambda: unwrap(method.players["discriminator"]), image) if self.has_disc else None
        provides = {"teacher", "student", "images", "features"} | ({"critic"} if self.has_disc else set())
        why = {"critic": "it has no discriminator (set players.discriminator and data.synth_real)",
               "labels": "synthetic images have no labels", "index": "synthetic images are no rows of a transfer set"}

        def ctx(role: str, given: set) -> TermContext:
            return TermContext(method=cfg.method, kind="classifier", student=student(), teacher=teacher,
                               student_input=image, teacher_input=image, provides=frozenset(given), why_not=why,
                               num_classes=spec.num_classes, spec=spec, critic=critic, role=role)

        hint = "; e.g. the recipes dfad, dafl, deepinversion, mosaickd (kdlab list terms)"
        self.train_generator = bool(pc.train_generator)
        if not self.train_generator and self.has_disc:
            raise ConfigError(f"players.train_generator = false keeps the generator untrained and runs no synthesis, so "
                              f"players.discriminator = {pc.discriminator!r} would never learn: set players.discriminator=null")
        # the control's generator is never stepped: objective.generator is not built
        self.g_objective = method.plain_objective(ctx("generator", provides), "generator", hint) if self.train_generator else None
        self.d_objective = method.plain_objective(ctx("discriminator", {"critic"}), "discriminator") if self.has_disc else None
        lo, hi = getattr(gen, "output_range", (-1.0, 1.0))
        self.output_range = (lo, hi)
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
        # x = ((g - lo) / (hi - lo) - mean) / std = g * scale + shift
        self._scale = 1.0 / ((hi - lo) * std)
        self._shift = (-lo / (hi - lo) - mean) / std
        self._logs: Dict[str, torch.Tensor] = {}

    @staticmethod
    def _build_disc(pc: Any, spec: Any, image: tuple, has_real: bool) -> nn.Module:
        if not has_real:
            raise ConfigError(f"players.discriminator = {pc.discriminator!r} learns real images from generated ones: set "
                              "data.synth_real to a data set of real (e.g. out-of-domain) images, e.g. mnist-digits")
        if pc.discriminator not in DISCRIMINATORS:
            raise ConfigError(f"players.discriminator = {pc.discriminator!r}; accepted: {', '.join(DISCRIMINATORS.names())}")
        try:
            disc = build_discriminator(pc.discriminator, in_channels=spec.in_channels, image_size=spec.image_size,
                                       **dict(pc.disc_kwargs))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"players.disc_kwargs = {dict(pc.disc_kwargs)} do not fit discriminator "
                              f"{pc.discriminator!r}: {exc}") from exc
        was = disc.training
        disc.eval()  # a shape probe: leave BatchNorm statistics untouched
        with torch.no_grad():
            out = disc(torch.zeros(2, *image))
        disc.train(was)
        if out.dim() not in (1, 4) or out.shape[0] != 2 or (out.dim() == 4 and out.shape[1] != 1):
            raise ConfigError(f"players.discriminator = {pc.discriminator!r} returns {tuple(out.shape[1:])} per image "
                              f"{image}; the synthesizer needs one logit [B] or a logit map [B, 1, h, w]")
        return disc

    def describe(self) -> Dict[str, Any]:
        """What ``summary.json`` records of the synthesis: the players, the real images and each objective."""
        from omegaconf import OmegaConf

        cfg = self.method.cfg
        players = [p for p in ("generator", "discriminator") if p in cfg.objective]
        return {"generator": cfg.players.generator, "discriminator": cfg.players.discriminator,
                "synth_real": cfg.data.synth_real, "synth_every": self.every, "synth_steps": self.steps,
                "epoch_pass": cfg.players.epoch_pass, "epoch_passes": epoch_passes(cfg),
                "train_generator": self.train_generator,
                "batch": self.batch_size, "objective": {p: OmegaConf.to_container(cfg.objective[p]) for p in players}}

    # -- images ------------------------------------------------------------------------------------
    def device(self) -> torch.device:
        return next(unwrap(self.method.players["generator"]).parameters()).device

    def generate(self, n: int, device: Any) -> torch.Tensor:
        """``n`` synthetic images [n, C, H, W] in the teacher's normalised input space, WITH the generator's graph."""
        z = rank_rows(lambda m: sample_latent(m, self.latent_dim, device=device), n)
        g = self.method.players["generator"](z)
        if self._scale.device != g.device:  # moved once, not on every step
            self._scale, self._shift = self._scale.to(g.device), self._shift.to(g.device)
        return g * self._scale + self._shift

    def sample(self, n: int, device: Any) -> torch.Tensor:
        """``n`` synthetic images for the student [n, C, H, W] (normalised), without a graph."""
        with torch.no_grad():
            return self.generate(n, device)

    # -- the players' steps ----------------------------------------------------------------------------
    def synthesize(self, batch: Batch) -> Dict[str, torch.Tensor]:
        """A discriminator step on ``(batch.x, G(z))`` (with a discriminator), then a generator step on the same
        ``G(z)``; returns the detached losses (``d_loss``, ``g_loss``, ``g_<term>``)."""
        device = self.device()
        fake = self.generate(self.batch_size, device)
        logs: Dict[str, torch.Tensor] = {}
        if self.has_disc:
            if batch.x is None:
                raise RuntimeError("the synthesizer's discriminator needs real images (data.synth_real) in every batch")
            logs["d_loss"] = self.d_step(batch.x.to(device), fake.detach())
        logs.update(self.g_step(fake))
        return logs

    def d_step(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """One discriminator update on ``objective.discriminator`` (``t``: D on real, ``s``: D on generated)."""
        disc = self.method.players["discriminator"]
        r = Outputs(out=disc(real))
        f = Outputs(out=disc(fake.detach()))
        loss = self.d_objective(f, r, Batch(x=fake))["loss"]
        self.method.step_optimizer("discriminator", loss)
        return loss.detach()

    def g_step(self, fake: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One generator update on ``objective.generator`` of ``fake`` (normalised images WITH the generator's
        graph); the student (and D, inside the terms) are frozen while they see it."""
        obj = self.g_objective
        out, feats = forward_features(self.teacher, fake, obj.teacher_features)
        t = Outputs(out=out, features=feats, x=fake)
        s = Outputs(out=fake)
        if obj.needs_student:
            student = self.student()
            with frozen(student):
                s.opponent = Outputs(out=student(fake), x=fake)
        terms = obj(s, t, Batch(x=fake))
        loss = nan_guard(fake, terms.pop("loss"))
        self.method.step_optimizer("generator", loss)
        return {"g_loss": loss.detach(), **{f"g_{k}": v.detach() for k, v in terms.items()}}

    def step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        """The syntheses due at ``step``; returns the last synthesis' losses (logged at every step). None with
        ``players.train_generator: false``."""
        if self.train_generator and step % self.every == 0:
            self._logs = {}
            for _ in range(self.steps):
                self._logs.update(self.synthesize(batch))
        return dict(self._logs)

    def student_batch(self, batch: Batch) -> Batch:
        """The student's batch: ``sample(n)``, followed by the real images of ``batch`` with ``data.synth_real``."""
        device = self.device()
        x = self.sample(self.batch_size, device)
        if self.mix_real and batch.x is not None:
            x = torch.cat([x, batch.x.to(device)], 0)
        return Batch(x=x)

    def save_grid(self, run_dir: Path, epoch: int) -> None:
        """``samples/epoch_NNN.png``: 64 synthetic images of a fixed latent seed, in [0, 1]."""
        from kdlab.metrics.generative import save_grid

        gen = unwrap(self.method.players["generator"])
        was = gen.training
        gen.eval()
        with torch.no_grad():
            z = sample_latent(64, self.latent_dim, torch.Generator().manual_seed(0)).to(self.device())
            g = gen(z)
        gen.train(was)
        lo, hi = self.output_range
        save_grid((g - lo) / (hi - lo), Path(run_dir) / "samples" / f"epoch_{epoch + 1:03d}.png")
