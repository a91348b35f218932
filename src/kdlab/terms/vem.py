"""VEM (Kang et al., NeurIPS 2022): the variational MI lower bound with an energy-based q(t | s), as a term."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.nn.utils import parametrize

from kdlab.config import ConfigError, OptimConfig, bounded, choice
from kdlab.engine import NonFiniteLossError
from kdlab.losses.ebm import (ENERGY_REG, LANGEVIN_COUPLINGS, LANGEVIN_NOISE, LANGEVIN_STEP_SIZE, LANGEVIN_STEPS,
                              ebm_loss, langevin, vem_student_loss)
from kdlab.models.ebm import ENERGIES, build_energy, energy_name
from kdlab.terms._images import image_target, target_requires
from kdlab.terms.base import OUTPUT, TERMS, Term, TermConfig, layer_pairs, pick

#: ``objective.student.vem.target``: the teacher's output, or the ground truth of paired data (sec. 5.3)
TARGETS = ("teacher", "ground_truth")
#: the public ports' Langevin step size (``papers/NOTES.md``; sec. 5.3's value for Cityscapes and FFHQ)
PORTS_STEP_SIZE = 50.0
#: default widths: C = 32 of Fig. 4 / A.3 for images; the MLP's hidden width for vectors
DEFAULT_CHANNELS = {"conv": 32, "mlp": 256}


@TERMS.register("vem")
class VEMTerm(Term):
    """VEM: ``weight * (mean E(t, s) - mean E(t~, s))`` (eqs. 8-10; ``weight`` = lambda_MI), with its own EBM player.

    Per batch, with t the teacher's output (or the ground truth, ``target: ground_truth``: sec. 5.3's paired
    mode, "the MI between the outputs given by the student model and the real outputs") and s the student's (``layers``: one ``[student, teacher]`` pair, default ``[[output, output]]``: images
    of generator students, logits of classifiers; a named feature map works too):

    1. t~ = K-step Langevin (eq. 7, :func:`kdlab.losses.ebm.langevin`) from t~_0 = s (sec. 4.1.3) on
       E(., s), s detached; samples detached.
    2. The student's term (this forward): :func:`kdlab.losses.ebm.vem_student_loss` of E(t, s) and
       E(t~, s); gradient to the student through s only (eq. 9); the EBM's parameters get none.
    3. The EBM's update (:meth:`update`, after the student's step, on the SAME samples, so no second
       chain; the paper updates theta first, an alternation phase that changes nothing else): eq. 6 +
       the squared-energy regulariser (A.3), :func:`kdlab.losses.ebm.ebm_loss`, with Adam ``lr``,
       ``betas`` (ports: 1e-4, (0, 0.999)), s detached.

    The EBM (:mod:`kdlab.models.ebm`: ``conv`` Fig. 4 for maps, ``mlp`` for vectors; spectral norm on
    every layer) is the player ``<student>.vem.ebm``: checkpointed with its optimizer, and deliberately
    not a submodule of the term, so the student's optimizer (and DDP wrapper) never covers it.

    ``target: ground_truth``: for an image student (``[C, H, W]`` output) t is the paired task's real output
    image ``batch.target`` (capability ``targets``: paired translation data; the teacher is not read); for a
    classifier (logits ``[K]``) t is the one-hot ``batch.y``. Either way the pair is (real t, student s) and
    the Langevin chain still starts at the student's output s (sec. 4.1.3); only the student's output
    (``layers`` = ``[[output, output]]``) has a ground truth.

    Langevin defaults are sec. 5.3's (``coupling: ports``: separate step and noise, K 10, eta 100, sigma
    0.005); sec. 5.3 uses eta 50 on Cityscapes and FFHQ, which is also the public ports' setting
    (:data:`PORTS_STEP_SIZE`, ``papers/NOTES.md``): ``step_size: 50``. ``coupling: paper`` is eq. 7's
    ``-(lambda/2) grad E + N(0, lambda I)`` with lambda = ``step_size``.

    Logged after each step: ``energy_data`` = mean E(t, s), ``energy_sample`` = mean E(t~, s),
    ``energy_gap`` = their difference sample - data (> 0 when the EBM separates them), ``energy_abs`` =
    mean |E| over both, ``ebm_loss``. An energy that is NaN/inf or whose magnitude exceeds
    ``max_energy`` stops the run (:class:`kdlab.engine.NonFiniteLossError`; ``last.ckpt`` is kept).

    Raises (at construction): ConfigError for more than one pair, teacher and student outputs of
    different shapes (names both), ``target: ground_truth`` on a feature (not the output), without paired
    target images (image students) or labels (classifiers), or an energy body that does not take the
    outputs' shape.
    """

    @dataclass
    class Config(TermConfig):
        weight: float = bounded(0.05, ge=0)  # lambda_MI (ports 0.05; paper Table 6: 0.005-0.2)
        layers: List[List[str]] = field(default_factory=list)  # one [student, teacher] pair; [] = output
        target: str = choice("teacher", TARGETS)  # teacher output | ground_truth (batch.target images, batch.y labels)
        energy: str = choice("auto", ("auto",) + tuple(ENERGIES.names()))  # auto: conv for maps, mlp for vectors
        channels: Optional[int] = bounded(None, ge=1, optional=True)  # C of Fig. 4 (null: 32) / MLP width (null: 256)
        # K Langevin steps: short-run MCMC (paper 10); each is an EBM forward + backward per student step
        steps: int = bounded(LANGEVIN_STEPS, ge=1, le=1000)
        step_size: float = bounded(LANGEVIN_STEP_SIZE, gt=0)  # eta (ports) or lambda (paper); sec. 5.3: 100 (50 Cityscapes/FFHQ, ports)
        noise: float = bounded(LANGEVIN_NOISE, ge=0)  # sigma (ports coupling only)
        coupling: str = choice("ports", LANGEVIN_COUPLINGS)
        reg: float = bounded(ENERGY_REG, ge=0)  # squared-energy regulariser weight (A.3; ports 0.05)
        lr: float = bounded(1e-4, gt=0)  # the EBM's Adam learning rate (sec. 5.3)
        betas: List[float] = bounded([0.0, 0.999], ge=0, lt=1)  # the EBM's Adam betas (ports)
        max_energy: float = bounded(1e4, gt=0)  # |E| above this stops the run

    requires = frozenset({"teacher"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        pairs = layer_pairs(cfg.layers, "vem", default=[(OUTPUT, OUTPUT)])
        if len(pairs) != 1:
            raise ConfigError(f"objective.student.vem.layers takes one [student, teacher] pair (one EBM); got {len(pairs)}")
        if len(cfg.betas) != 2:
            raise ConfigError(f"objective.student.vem.betas = {list(cfg.betas)} must be two numbers [beta1, beta2]")
        self.pair = pairs[0]
        self.images = False  # ground truth = a real output image (set below)
        a, b = self.pair
        s_shape = tuple(ctx.student_shapes([a], "vem")[a])
        if cfg.target == "teacher":
            self.expose(pairs)
            t_shape = tuple(ctx.teacher_shapes([b], "vem")[b])
            if t_shape != s_shape:
                raise ConfigError(f"term 'vem': the EBM pairs outputs of one shape; student {a!r} is {s_shape}, "
                                  f"teacher {b!r} is {t_shape}; pick a pair of equal shapes in objective.student.vem.layers")
        else:
            if a != OUTPUT:
                raise ConfigError(f"objective.student.vem.target = 'ground_truth' pairs the student's output with the real "
                                  f"output; the student feature {a!r} has no ground truth: set layers=[[output, output]] "
                                  f"or target=teacher")
            self.images = len(s_shape) == 3
            if self.images:  # sec. 5.3: the paired task's real output image, batch.target
                self.requires = target_requires("ground_truth", ctx, "vem", base=())
            elif "labels" not in ctx.provides:
                raise ConfigError(f"objective.student.vem.target = 'ground_truth' needs paired targets (batch.y), which method "
                                  f"{ctx.method!r} does not provide: {ctx.why_not.get('labels', '')}; use target=teacher")
            else:
                self.requires = frozenset({"labels"})
            self.expose([(a, OUTPUT)])
            self.teacher_features = []
        try:
            kind = energy_name(cfg.energy, s_shape)
            channels = cfg.channels if cfg.channels is not None else DEFAULT_CHANNELS.get(kind, 32)
            ebm = build_energy(kind, s_shape, int(channels))
        except ValueError as exc:
            raise ConfigError(f"objective.student.vem.energy = {cfg.energy!r} on student {a!r} {s_shape}: {exc} "
                              f"(accepted: auto, {', '.join(ENERGIES.names())})") from None
        object.__setattr__(self, "ebm", ebm)  # a player of its own, not a submodule (see the class docstring)
        self._cache: Optional[tuple] = None

    def players(self):
        optim = OmegaConf.structured(OptimConfig(name="adam", lr=float(self.cfg.lr), betas=[float(x) for x in self.cfg.betas],
                                                 weight_decay=0.0, scheduler="none"))
        return {"ebm": (self.ebm, optim)}

    def target(self, s: torch.Tensor, t, batch) -> torch.Tensor:
        """t of the bound, detached: the teacher's output; or, with ``target: ground_truth``, the real output image
        ``batch.target`` [B, C, H, W] of an image student, or ``batch.y`` of a classifier (one-hot for class labels
        of logits [B, K]).

        Raises:
            ValueError: the batch has no ground truth, or it differs in shape from the student's output ``s``.
        """
        if self.cfg.target == "teacher":
            return pick(t, self.pair[1]).detach()
        if self.images:
            y = image_target("ground_truth", t, batch)
            if y.shape != s.shape:
                raise ValueError(f"ground-truth image {tuple(y.shape)} and student output {tuple(s.shape)} differ in shape")
            return y.detach().to(s.dtype)
        y = batch.y
        if y is None:
            raise ValueError("objective.student.vem.target = 'ground_truth' but the batch has no targets (batch.y)")
        if y.dtype in (torch.int64, torch.int32) and s.dim() == 2 and y.dim() == 1:
            return F.one_hot(y.long(), s.shape[1]).to(s.dtype)
        if y.shape != s.shape:
            raise ValueError(f"ground truth {tuple(y.shape)} and student output {tuple(s.shape)} differ in shape")
        return y.to(s.dtype)

    def _energies(self, t: torch.Tensor, t_tilde: torch.Tensor, s: torch.Tensor, ebm=None):
        e = (ebm if ebm is not None else self.ebm)(torch.cat([t, t_tilde]), torch.cat([s, s]))
        return e[: len(t)], e[len(t):]

    @contextmanager
    def _fixed_ebm(self):
        """theta held fixed: no parameter gradients, and each spectrally normalised weight computed once
        (``parametrize.cached``: one power iteration per chain instead of one per Langevin step)."""
        params = [p for p in self.ebm.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            with parametrize.cached():
                yield
        finally:
            for p in params:
                p.requires_grad_(True)

    def forward(self, s, t, batch):
        s_out = pick(s, self.pair[0])
        target = self.target(s_out, t, batch)
        s_fixed = s_out.detach()
        cfg = self.cfg
        with self._fixed_ebm():  # theta is not the student's: the graph reaches the student through s only
            t_tilde = langevin(lambda x: self.ebm(x, s_fixed), s_fixed, cfg.steps, cfg.step_size, cfg.noise,
                               cfg.coupling)
            e_data, e_sample = self._energies(target, t_tilde, s_out)
        self._cache = (target, t_tilde, s_fixed)
        return vem_student_loss(e_data, e_sample)

    def update(self, s, t, batch, step):
        if self._cache is None:
            return {}
        target, t_tilde, s_fixed = self._cache
        self._cache = None
        with torch.enable_grad():
            e_data, e_sample = self._energies(target, t_tilde, s_fixed, self.wrapped("ebm"))
            loss = ebm_loss(e_data, e_sample, float(self.cfg.reg))
        e = torch.cat([e_data, e_sample]).detach()
        worst = float(e.abs().max())  # one sync per step: the bound must stop the run before a bad step
        if not (worst <= float(self.cfg.max_energy)):
            raise NonFiniteLossError(
                f"term 'vem': the energy reached |E| = {worst:.4g} (NaN/inf or above objective.student.vem.max_energy = "
                f"{self.cfg.max_energy:g}); lower objective.student.vem.step_size or objective.student.vem.lr, or raise "
                f"objective.student.vem.reg (the squared-energy regulariser)")
        step("ebm", loss)
        d, m = e_data.detach().mean(), e_sample.detach().mean()
        return {"energy_data": d, "energy_sample": m, "energy_gap": m - d, "energy_abs": e.abs().mean(),
                "ebm_loss": loss.detach()}
