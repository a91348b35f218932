"""The players of GAN games and their helpers: generator/discriminator builders, the data-range map
to the generators' Tanh range, the discriminator's step of one game (its objective of terms), an EMA of
weights, a NaN guard and discriminator freezing.
"""
from __future__ import annotations

import copy
import inspect
from typing import Any, Dict, Sequence

import torch
from torch import nn

from kdlab.config import ConfigError
from kdlab.engine import unwrap
from kdlab.engine.generators import load_generator
from kdlab.engine.optim import optim_with_lr
from kdlab.models.gan import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator, generator_input_kind


#: the generator's data keys, set from the data set (never from ``model.kwargs``)
_DATA_KEYS = ("out_channels", "image_size", "in_channels")


def gen_kwargs(cfg: Any) -> Dict[str, Any]:
    """``model.kwargs`` of a GAN run, with a clear error for keys the generator does not take: its factory's
    options (DCGAN: ``d``, ``latent_dim``; SAGAN: ``ngf``, ``latent_dim``; image-to-image generators: ``ngf``,
    ``num_downs``, ``n_blocks``, ``norm``, ``dropout``), never the data keys (channels, size)."""
    kw = dict(cfg.model.kwargs)
    accepted = [p for p in inspect.signature(GENERATORS.get(cfg.model.name)).parameters if p not in _DATA_KEYS]
    bad = sorted(set(kw) - set(accepted))
    if bad:
        raise ValueError(f"model.kwargs {bad} are not options of generator {cfg.model.name!r}; accepted: "
                         f"{', '.join(accepted)}" + (" (channels and image size come from the data set)"
                                                    if set(bad) & set(_DATA_KEYS) else ""))
    return kw


def build_gen(cfg: Any, spec: Any, inputs: str = "latent", **override: Any) -> nn.Module:
    """The generator of ``model.name``/``model.kwargs`` for the data set ``spec``: the one generator builder.

    Routed on the generator's input kind (:func:`kdlab.models.gan.generator_input_kind`): a latent
    generator ``z -> [B, spec.in_channels, S, S]`` (unconditional games), an image-to-image generator
    ``[B, spec.in_channels, S, S] -> [B, spec.out_channels, S, S]`` (translation students and teachers).
    ``inputs`` is the kind the calling method feeds (``"latent"`` or ``"image"``); ``override`` replaces
    ``model.kwargs`` entries (e.g. the teacher's ``latent_dim``). ``model.checkpoint`` (where the config has
    the key) initialises the weights.

    Raises:
        ValueError: not a generator, or ``model.kwargs`` it does not take (lists the accepted ones).
        ConfigError: a generator of the other input kind (lists the accepted ones).
    """
    if cfg.model.name not in GENERATORS:
        raise ValueError(f"model.name = {cfg.model.name!r} is not a generator; accepted: {', '.join(GENERATORS.names())}")
    kind = generator_input_kind(cfg.model.name)
    if kind != inputs:
        accepted = ", ".join(n for n in GENERATORS.names() if generator_input_kind(n) == inputs)
        what = ("an image-to-image generator (it takes images, not z)" if kind == "image"
                else "a latent generator (it takes z, not images)")
        trains = "latent generators" if inputs == "latent" else "image-to-image generators"
        raise ConfigError(f"model.name = {cfg.model.name!r} is {what}; method {cfg.method!r} trains {trains}: "
                          f"accepted: {accepted}")
    kw = {**gen_kwargs(cfg), **override}
    if kind == "image":
        gen = build_generator(cfg.model.name, out_channels=getattr(spec, "out_channels", spec.in_channels),
                              image_size=spec.image_size, in_channels=spec.in_channels, **kw)
    else:
        gen = build_generator(cfg.model.name, out_channels=spec.in_channels, image_size=spec.image_size, **kw)
    from omegaconf import OmegaConf

    init = OmegaConf.select(cfg, "model.checkpoint", default=None)  # initial weights (where the config has the key)
    if init:
        src = load_generator(init, what="model.checkpoint")
        got = (src.arch, dict(src.arch_kwargs), tuple(src.output_shape))
        want = (gen.arch, dict(gen.arch_kwargs), tuple(gen.output_shape))
        if got != want:
            raise ValueError(f"model.checkpoint {init!r} holds generator {got} (arch, kwargs, output shape); "
                             f"the config builds {want}")
        gen.load_state_dict(src.state_dict())
    return gen


class DataRange:
    """Normalised data-set batches ``(x - mean) / std`` <-> the generators' Tanh range [-1, 1]."""

    def __init__(self, spec: Any) -> None:
        c = spec.in_channels
        self.mean = torch.tensor(spec.mean, dtype=torch.float32).reshape(1, c, 1, 1)
        self.std = torch.tensor(spec.std, dtype=torch.float32).reshape(1, c, 1, 1)

    def to_tanh(self, x: torch.Tensor) -> torch.Tensor:
        """``x01 = x * std + mean``; returns ``2 * x01 - 1``."""
        mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
        return 2.0 * (x * std + mean) - 1.0


class DiscriminatorGame:
    """The discriminator's step of a GAN game: its objective's terms (``gan``, ``gradient_penalty``) on D's
    outputs for real and generated images, then WGAN's weight clipping when ``players.clip`` is set.

    Args:
        method: the host method (``players["discriminator"]``, ``step_optimizer``).
        objective: the built ``objective.discriminator``.
        clip: clip every D parameter to [-clip, clip] after its update (Arjovsky et al., Alg. 1), or None.
    """

    def __init__(self, method: Any, objective: Any, clip: Any = None) -> None:
        self.method, self.objective, self.clip = method, objective, clip

    def step(self, real: torch.Tensor, fake: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One D update on ``real`` and ``fake`` (detached here; D conditioned by the caller's concatenation);
        returns ``loss_d`` and each term (detached)."""
        from kdlab.data.batch import Batch
        from kdlab.terms import Outputs

        D = self.method.players["discriminator"]
        fake = fake.detach()
        r, f = Outputs(out=D(real), x=real), Outputs(out=D(fake), x=fake)
        terms = self.objective(f, r, Batch(x=fake))
        self.method.step_optimizer("discriminator", terms["loss"])
        if self.clip is not None:
            with torch.no_grad():
                for p in unwrap(D).parameters():
                    p.clamp_(-self.clip, self.clip)
        out = {f"d_{k}": v.detach() for k, v in terms.items() if k != "loss"}
        out["loss_d"] = terms["loss"].detach()
        return out


def build_disc(cfg: Any, spec: Any, disc_name: str, gen: nn.Module, **kwargs: Any) -> nn.Module:
    """The critic ``disc_name`` of width ``players.disc_d`` (else the generator's ``d``, or ``ngf`` for SAGAN):
    the depth scale factor d of dcgan/wdcgan, the first layer's width ndf of sagan. ``kwargs``: further options
    of the discriminator (e.g. sagan's ``gate_threshold``)."""
    lc = cfg.players
    width = int(lc.disc_d or getattr(gen, "d", None) or gen.ngf)
    key = "d" if "d" in inspect.signature(DISCRIMINATORS.get(disc_name)).parameters else "ndf"
    return build_discriminator(disc_name, in_channels=spec.in_channels, image_size=spec.image_size, **{key: width},
                               **kwargs)


def teacher_discriminator(cfg: Any, spec: Any, teacher: nn.Module, run: str) -> nn.Module:
    """The teacher GAN run's own discriminator, frozen (eval mode, no gradients): GCC's D^t (VEM eq. 17).

    Built as ``players.disc`` (null: ``model.name``) of width ``players.disc_d`` (null: the teacher's ``d``/``ngf``)
    and loaded from ``run`` (a ``kdlab train-gan`` run directory or its ``last.ckpt``).

    Raises:
        FileNotFoundError / ValueError: as :func:`load_discriminator` (no run, no discriminator, another shape).
    """
    disc = build_disc(cfg, spec, cfg.players.disc or cfg.model.name, teacher)
    load_discriminator(disc, run, "players.teacher_disc")
    disc.eval()
    for p in disc.parameters():
        p.requires_grad_(False)
    return disc


def discriminator_state(run: str, players: Sequence[str] = ("discriminator",), key: str = "players.disc_init"):
    """``(state_dict, player name)`` of the first of ``players`` that the GAN run ``run`` holds (its
    ``checkpoints/last.ckpt``, or a ``.ckpt`` file): e.g. ``discriminator`` of a train-gan or pix2pix run,
    ``disc_b`` of a CycleGAN run (the judge of G: A -> B's output domain). ``key``: the config key that named
    the run, for the errors.

    Raises:
        FileNotFoundError: no such run or checkpoint (names the path).
        ValueError: the checkpoint holds none of ``players`` (names them).
    """
    from pathlib import Path

    from kdlab.engine.checkpoint import load_checkpoint

    path = Path(run)
    path = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{key} = {run!r}: no GAN run checkpoint at {path} (a kdlab train-gan, pix2pix or "
                                "cyclegan run)")
    held = (load_checkpoint(path, what=key).get("method") or {}).get("players", {})
    for name in players:
        if held.get(name) is not None:
            return held[name], name
    raise ValueError(f"{key} = {run!r} holds no discriminator (players {sorted(held)}; looked for "
                     f"{', '.join(players)})")


def load_discriminator(disc: nn.Module, run: str, key: str = "players.disc_init") -> None:
    """Load the discriminator of a GAN run (:func:`discriminator_state`) into ``disc`` (``key``: the config
    key that named the run, for the errors).

    Raises:
        FileNotFoundError: no such run or checkpoint (names the path).
        ValueError: the checkpoint holds no discriminator, or one of another shape (names the run).
    """
    state, _ = discriminator_state(run, key=key)
    try:
        disc.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{key} = {run!r}: its discriminator does not fit the configured one "
                         f"(players.disc / players.disc_d): {str(exc).splitlines()[0]}") from None


def add_discriminator(method: Any, disc: nn.Module, optim_cfg: Any, ctx: Any = None) -> Any:
    """Register ``disc`` as player ``discriminator`` and, when it has GCC's channel gates, their player
    ``discriminator_gates`` (the :class:`kdlab.models.gates.GateSet` in ``ctx.game.gates``; Adam
    ``players.arch_lr``, :func:`gates_optim_cfg`) with its objective ``objective.discriminator_gates`` built in
    ``ctx``. D's optimizer never holds the gates. Returns that objective, or None for an ungated D.

    Raises:
        ConfigError: gates without a term in ``objective.discriminator_gates``, such terms without gates, or a term
            whose ``mode`` is not the discriminator's game.
    """
    from kdlab.models.gates import channel_gates

    gates = channel_gates(disc)
    for g in gates:
        g.alpha.requires_grad_(False)
    method.add_player("discriminator", disc, optim_cfg)
    for g in gates:
        g.alpha.requires_grad_(True)
    configured = [k for k, v in (method.cfg.objective.get("discriminator_gates") or {}).items() if float(v.weight) > 0]
    if not gates:
        if configured:
            raise ConfigError(f"objective.discriminator_gates ({', '.join(configured)}) trains the channel gates of the "
                              "student's discriminator; there are none: set players.disc_gates (GCC's threshold)")
        return None
    game = method.cfg.objective.discriminator.gan.mode
    for name, term in method.cfg.objective.discriminator_gates.items():
        if float(term.weight) > 0 and "mode" in term and term.mode != game:
            raise ConfigError(f"objective.discriminator_gates.{name}.mode = {term.mode!r} reads another game than the "
                              f"discriminator's (objective.discriminator.gan.mode = {game!r}); set both to one mode")
    method.add_player("discriminator_gates", ctx.game.gates, gates_optim_cfg(method.cfg.optim, method.cfg.players.arch_lr))
    return method.plain_objective(ctx, "discriminator_gates", " (GCC: objective.discriminator_gates.selective_activation)")


def gates_optim_cfg(optim: Any, lr: float) -> Any:
    """GCC's ``optimizer_arch``: ``Adam(arch_params, lr=arch_lr)`` (betas (0.9, 0.999), no decay, no schedule)."""
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(optim)
    out.update(name="adam", lr=float(lr), betas=[0.9, 0.999], weight_decay=0.0, scheduler="none")
    return OmegaConf.create(out)


def gate_step(method: Any, student_images: torch.Tensor, teacher_images: torch.Tensor, batch: Any) -> Dict[str, torch.Tensor]:
    """One update of the student discriminator's gates (GCC's ``clipping_mask_alpha`` then ``optimizer_netD_arch``):
    alpha clipped to [0, 1], then ``method.gate_objective`` on the student's and the teacher's images of the same
    inputs (no gradient to either generator) and ``batch`` (``target``: real images; ``x``: a conditional D's sources).
    Returns ``loss_gates``, each term as ``gates_<term>`` and ``gates_on`` (the fraction of channels on)."""
    from kdlab.terms import Outputs

    gates = unwrap(method.players["discriminator_gates"])
    gates.clip_()
    terms = method.gate_objective(Outputs(out=student_images.detach()), Outputs(out=teacher_images.detach()), batch)
    method.step_optimizer("discriminator_gates", terms["loss"])
    out = {f"gates_{k}": v.detach() for k, v in terms.items() if k != "loss"}
    out["loss_gates"] = terms["loss"].detach()
    out["gates_on"] = gates.active_fraction()
    return out


def count_gate_epoch(method: Any, epoch: int) -> None:
    """After epoch ``epoch`` (0-based): the gates' player counts it (GCC's ``adaptive_ema_beta``)."""
    if "discriminator_gates" in method.players:
        unwrap(method.players["discriminator_gates"]).epochs_done.fill_(epoch + 1)


def disc_optim_cfg(cfg: Any):
    """``optim`` with ``players.disc_lr`` in place of ``lr`` when set."""
    return optim_with_lr(cfg.optim, cfg.players.disc_lr, "players.disc_lr")


def nan_guard(images: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """``loss``, or NaN when the generator produced a non-finite pixel (the engine then stops the run)."""
    # no host sync (the engine checks losses on accelerators only every log step)
    return torch.where(torch.isfinite(images.detach()).all(), loss, torch.full_like(loss, float("nan")))


class EMA:
    """Exponential moving average of a generator's weights (``w_ema <- decay w_ema + (1 - decay) w``;
    buffers such as BN statistics are copied). ``decay`` in (0, 1)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"players.ema = {decay} must be in (0, 1) (or 0 = off)")
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def generator_export_state(model: nn.Module, *, copy: bool = True, **metadata: Any):
    """(CPU copy of a generator's state_dict, metadata to rebuild it): the one export path of generator
    methods (``copy=False``: the live tensors, see :meth:`kdlab.games.base.Method.export_state`)."""
    from kdlab.engine.generators import generator_metadata
    from kdlab.games.base import export_tensors

    return export_tensors(model, copy), generator_metadata(model, **metadata)


def save_epoch_grid(method: Any, epoch: int) -> None:
    """``samples/epoch_NNN.png``: the exported generator on the run's fixed latents (``eval.sample_seed``),
    written by rank 0 after every epoch."""
    from kdlab.metrics.generative import generate_images, save_grid

    if method.fabric is not None and not method.fabric.is_global_zero:
        return
    gen = method.eval_model()
    dev = next(gen.parameters()).device
    imgs = generate_images(gen, method.cfg.eval.grid_n, gen.latent_dim, method.cfg.eval.sample_seed, 256, dev)
    save_grid(imgs, method.run_dir / "samples" / f"epoch_{epoch + 1:03d}.png")
