"""The base of classifier students trained on images a generator synthesises (``mosaickd``, ``dfad``,
``dafl``, ``deepinversion``), optionally mixed with unlabelled transfer images. Not a method itself.

Following Fast-Datafree's split, a subclass implements :meth:`SynthesizerStudentMethod.synthesize`
(update the generator, and any player of its own such as a discriminator, on a transfer batch) and
the base owns :meth:`SynthesizerStudentMethod.sample` (a batch of synthetic images for the student,
without a graph) and the student's step. One ``training_step`` on a transfer batch ``b``:

1. every ``players.synth_every``-th step (and the first), ``synthesize(b)`` (``players.synth_steps``
   generator updates);
2. ``x = cat(sample(n), b.x)`` (``b.x`` None in data-free runs: the synthetic images alone) with
   ``n = players.synth_batch`` (default: ``data.batch_size``);
3. one student step on ``x`` with the objective of ``objective.student`` (default: KL(p_t || p_s) at T = 1,
   the student loss of MosaicKD and DFAD's code), the teacher's outputs on the same ``x``.

So ``synth_every = 5`` gives MosaicKD's five student steps per generator update, each on a fresh
transfer batch and fresh latents (NOTES.md). The generator outputs images in its ``output_range``
(Sigmoid: [0, 1]); they are mapped to [0, 1] and normalised with the teacher domain's mean/std, so
the teacher sees what its own data would look like. Schedules step per epoch (the published code
anneals per iteration; same shape over the run).
"""
from __future__ import annotations

import warnings
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from kdlab.config import ConfigError, OptimConfig, bounded
from kdlab.data import TRANSFER_NONE
from kdlab.data.batch import Batch
from kdlab.methods.base import unwrap
from kdlab.methods.classifier_student import ClassifierStudentConfig, ClassifierStudentMethod
from kdlab.models.gan import GENERATORS, build_generator, sample_latent
from kdlab.terms import Outputs


def _g_optim() -> OptimConfig:
    # MosaicKD / DFAD / DAFL code: Adam 1e-3, betas (0.5, 0.999) for the generator
    return OptimConfig(name="adam", lr=1e-3, betas=[0.5, 0.999], weight_decay=0.0, scheduler="cosine")


@dataclass
class SynthesizerConfig(ClassifierStudentConfig):
    """``loss`` keys of every synthesising method (subclasses add their generator losses)."""

    generator: str = "mosaic"  # a registered generator (kdlab list generators)
    generator_kwargs: Dict[str, Any] = field(default_factory=dict)
    latent_dim: int = bounded(100, ge=1)  # nz
    synth_every: int = bounded(5, ge=1)  # student steps per synthesis (generator update round)
    synth_steps: int = bounded(1, ge=1)  # generator updates per synthesis
    synth_batch: Optional[int] = bounded(None, ge=1, optional=True)  # synthetic images per student step
    g_optim: OptimConfig = field(default_factory=_g_optim)


class SynthesizerStudentMethod(ClassifierStudentMethod):
    """Frozen teacher, classifier student, generator (player ``generator``): see the module docstring.

    Class attributes for subclasses: :attr:`uses_transfer` (False: data-free, a transfer set given to
    it is ignored with a warning), :attr:`needs_transfer` (True: ``data.transfer=none`` is refused).

    Raises (at construction): ConfigError for an unknown generator, a generator whose output does not
    match the teacher's input (names both shapes), a missing required transfer set.
    """

    teacher_cache_unsupported = "synthesizes the student's inputs every step, so its teacher's outputs change with them"

    Config = SynthesizerConfig
    default_objective = {"student": {"kd": {"weight": 1.0, "temperature": 1.0}}}
    synthesizes = True
    uses_transfer = True
    needs_transfer = False

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        lc = cfg.players
        data_free = cfg.data.transfer == TRANSFER_NONE
        if self.needs_transfer and data_free:
            raise ConfigError(f"method {cfg.method!r} trains on unlabelled transfer images besides its synthetic ones; "
                              "data.transfer = 'none' gives none: set data.transfer to an out-of-domain set, e.g. "
                              "mnist-digits or imagefolder:<path>")
        if not self.uses_transfer and not data_free:
            warnings.warn(f"method {cfg.method!r} is data-free: it ignores the images of data.transfer = "
                          f"{cfg.data.transfer or 'train'!r} (only their count sets the epoch length); "
                          "set data.transfer=none to say so", stacklevel=2)
        if lc.generator not in GENERATORS:
            raise ConfigError(f"players.generator = {lc.generator!r}; accepted: {', '.join(GENERATORS.names())}")
        gen = build_generator(lc.generator, out_channels=spec.in_channels, image_size=spec.image_size,
                              latent_dim=int(lc.latent_dim), **dict(lc.generator_kwargs))
        got, want = tuple(gen.output_shape), (spec.in_channels, spec.image_size, spec.image_size)
        if got != want:
            raise ConfigError(f"players.generator {lc.generator!r} makes images {got}; the teacher takes {want}")
        self.add_player("generator", gen, lc.g_optim)
        self.run_dir = Path(cfg.out_dir) / cfg.name
        lo, hi = getattr(gen, "output_range", (-1.0, 1.0))
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
        # x = ((g - lo) / (hi - lo) - mean) / std = g * scale + shift
        self._scale = 1.0 / ((hi - lo) * std)
        self._shift = (-lo / (hi - lo) - mean) / std

    def term_context(self, student, teacher, **kw):
        """As :meth:`Method.term_context`, without labels or row indices: the student's batches hold
        synthetic images, which have neither."""
        ctx = super().term_context(student, teacher, **kw)
        ctx.why_not["index"] = "its synthetic images are not rows of the transfer set"
        ctx.why_not["labels"] = "its student batches hold synthetic images, which have no labels"
        ctx.provides = ctx.provides - {"index", "labels"}
        return ctx

    # -- the generator -------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return int(self.cfg.players.synth_batch or self.cfg.data.batch_size)

    def generate(self, n: int, device: Any) -> torch.Tensor:
        """``n`` synthetic images [n, C, H, W] in the teacher's normalised input space, WITH the graph to
        the generator (for :meth:`synthesize`)."""
        z = sample_latent(n, int(self.cfg.players.latent_dim), device=device)
        g = self.players["generator"](z)
        if self._scale.device != g.device:  # moved once, not on every step
            self._scale, self._shift = self._scale.to(g.device), self._shift.to(g.device)
        return g * self._scale + self._shift

    def sample(self, n: int, device: Any) -> torch.Tensor:
        """``n`` synthetic images for the student, without a graph [n, C, H, W] (normalised)."""
        with torch.no_grad():
            return self.generate(n, device)

    @abstractmethod
    def synthesize(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        """Update the generator (and the method's own synthesis players) on ``batch``; return logs."""

    # -- the networks in the generator's step ------------------------------------------------------
    def teacher_net(self) -> nn.Module:
        return self.frozen["teacher"]

    def student_net(self) -> nn.Module:
        """The student network itself (unwrapped: a generator step back-propagates through it without
        DDP's gradient hooks; its gradients are cleared by the student's own step)."""
        return unwrap(self.players["student"]).net

    def device(self) -> torch.device:
        return next(unwrap(self.players["generator"]).parameters()).device

    # -- one step -----------------------------------------------------------------------------
    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        device = self.device()
        if step % int(self.cfg.players.synth_every) == 0:
            self._synth_logs: Dict[str, torch.Tensor] = {}
            for _ in range(int(self.cfg.players.synth_steps)):
                self._synth_logs.update(self.synthesize(batch, step))
        logs = dict(getattr(self, "_synth_logs", {}))  # the last synthesis' losses, logged at every step
        x = self.sample(self.batch_size, device)
        if self.uses_transfer and batch.x is not None:
            x = torch.cat([x, batch.x.to(device)], 0)
        student_batch = Batch(x=x)
        t = self.objective.teacher_outputs(self.frozen["teacher"], x, student_batch)
        s: Outputs = self.players["student"](x)
        terms = self.student_terms("student", s, t, student_batch)
        self.step_optimizer("student", terms["loss"])
        logs.update({k: v.detach() for k, v in terms.items()})
        logs.update(self.update_terms("student", s, t, student_batch))
        return logs

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        self._save_grid(epoch)

    def _save_grid(self, epoch: int) -> None:
        """``samples/epoch_NNN.png``: 64 synthetic images of a fixed latent seed (rank 0), in [0, 1]."""
        if self.fabric is not None and not self.fabric.is_global_zero:
            return
        from kdlab.metrics.generative import save_grid

        gen = unwrap(self.players["generator"])
        was = gen.training
        gen.eval()
        with torch.no_grad():
            z = sample_latent(64, int(self.cfg.players.latent_dim), torch.Generator().manual_seed(0)).to(self.device())
            g = gen(z)
        gen.train(was)
        lo, hi = getattr(gen, "output_range", (-1.0, 1.0))
        save_grid((g - lo) / (hi - lo), self.run_dir / "samples" / f"epoch_{epoch + 1:03d}.png")
