"""What the two GAN methods (``gan``, ``gan-compression``) share: config keys for the adversarial
game and the generative evaluation, the data range conversion, the discriminator step, generator
export metadata, the feature extractor of the metrics, and the end-of-run evaluation.

Not a method itself (no registration): :mod:`kdlab.methods.gan_teacher` and
:mod:`kdlab.methods.gan_compression` are.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from kdlab.engine import copy_with_state, file_sha256
from kdlab.engine.generators import load_generator, resolve_generator, save_generator
from kdlab.losses import (
    bce_discriminator_loss,
    bce_generator_loss,
    gradient_penalty,
    wgan_critic_loss,
    wgan_generator_loss,
)
from kdlab.metrics import count_macs, count_parameters, cpu_latency_ms
from kdlab.metrics.generative import (
    ClassifierFeatures,
    FeatureSet,
    InceptionExtractor,
    fid_from_features,
    generate_images,
    generator_batches,
    inception_weights_available,
    is_from_logits,
    kid_from_features,
    save_grid,
)
from kdlab.models.gan import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator

GAMES = ("gan", "wgan", "wgan-gp")


class GeneratorMismatchError(ValueError):
    """A generator's output shape does not match the data set's images (the message gives both)."""


@dataclass
class GanEvalConfig:
    """Keys of the end-of-run generative evaluation (part of the ``loss`` section of both GAN methods)."""

    extractor: Optional[str] = None  # classifier run dir / .safetensors (same data set), "inception", or null
    n_samples: int = 10000  # generated images for FID/KID/IS/VoL (vs the test split's images)
    sample_seed: int = 0  # seed of the fixed latents (the same z for teacher and students)
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    is_splits: int = 10
    grid_n: int = 64  # images per sample grid


@dataclass
class GanGameConfig(GanEvalConfig):
    """Keys of the adversarial game (``gan``: non-saturating BCE; ``wgan``: weight clipping; ``wgan-gp``)."""

    game: str = "gan"
    disc: Optional[str] = None  # dcgan | wdcgan; null: the generator's name (wgan-gp needs wdcgan: no BatchNorm)
    disc_d: Optional[int] = None  # discriminator depth scale factor; null: the generator's d
    n_critic: int = 1  # discriminator steps per generator step
    clip: float = 0.01  # wgan: weight clipping to [-clip, clip] (Arjovsky et al. 2017)
    gp_weight: float = 10.0  # wgan-gp: penalty weight (Gulrajani et al. 2017)
    disc_lr: Optional[float] = None  # null: optim.lr


def check_eval_config(lc: Any, max_test: Optional[int] = None) -> None:
    """Bad values of :class:`GanEvalConfig` -> ValueError naming the key and the accepted range; a missing
    extractor file -> FileNotFoundError (both before training, not after it)."""
    for key in ("n_samples", "kid_subset_size", "kid_subsets", "is_splits", "grid_n"):
        v = getattr(lc, key)
        if v < 1:
            raise ValueError(f"loss.{key} = {v} must be >= 1")
    if lc.kid_subset_size > lc.n_samples:
        raise ValueError(
            f"loss.kid_subset_size = {lc.kid_subset_size} is larger than loss.n_samples = {lc.n_samples}: too few "
            "samples for KID's subset size; lower kid_subset_size or raise n_samples"
        )
    if max_test is not None and lc.extractor and lc.kid_subset_size > max_test:
        raise ValueError(
            f"loss.kid_subset_size = {lc.kid_subset_size} is larger than data.max_test = {max_test} real test images: "
            "too few samples for KID's subset size; lower kid_subset_size or raise data.max_test"
        )
    if lc.extractor and str(lc.extractor).lower() != "inception":
        from kdlab.engine import resolve_weights

        resolve_weights(lc.extractor)


def check_game_config(lc: Any, gen_name: str) -> str:
    """Validate the game keys; returns the discriminator name."""
    if lc.game not in GAMES:
        raise ValueError(f"loss.game = {lc.game!r}; accepted: {', '.join(GAMES)}")
    disc = lc.disc or gen_name
    if disc not in DISCRIMINATORS:
        raise ValueError(f"loss.disc = {disc!r}; accepted: {', '.join(DISCRIMINATORS.names())}")
    if lc.game == "wgan-gp" and disc == "dcgan":
        raise ValueError("loss.game = 'wgan-gp' needs a critic without BatchNorm: set loss.disc=wdcgan")
    if lc.n_critic < 1:
        raise ValueError(f"loss.n_critic = {lc.n_critic} must be >= 1")
    if lc.disc_d is not None and lc.disc_d <= 0:
        raise ValueError(f"loss.disc_d = {lc.disc_d} must be > 0 (the discriminator's depth scale factor)")
    if lc.game == "wgan" and not lc.clip > 0:
        raise ValueError(f"loss.clip = {lc.clip} must be > 0 for game wgan")
    if lc.game == "wgan-gp" and lc.gp_weight < 0:
        raise ValueError(f"loss.gp_weight = {lc.gp_weight} must be >= 0")
    return disc


def gen_kwargs(cfg: Any) -> Dict[str, Any]:
    """``model.kwargs`` of a GAN run (``d``, ``latent_dim``), with a clear error for other keys."""
    kw = dict(cfg.model.kwargs)
    bad = sorted(set(kw) - {"d", "latent_dim"})
    if bad:
        raise ValueError(f"model.kwargs {bad} are not generator options; accepted: d, latent_dim")
    return kw


def build_gen(cfg: Any, spec: Any, **override: Any) -> nn.Module:
    """The generator of ``model.name``/``model.kwargs`` for the data set's images."""
    if cfg.model.name not in GENERATORS:
        raise ValueError(f"model.name = {cfg.model.name!r} is not a generator; accepted: {', '.join(GENERATORS.names())}")
    kw = {**gen_kwargs(cfg), **override}
    gen = build_generator(cfg.model.name, out_channels=spec.in_channels, image_size=spec.image_size, **kw)
    from omegaconf import OmegaConf

    init = OmegaConf.select(cfg, "model.checkpoint", default=None)  # initial weights (where the config has the key)
    if init:
        src = load_generator(init)
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


class Adversary:
    """A discriminator and its loss for one game; :meth:`d_loss` / :meth:`g_loss` and :meth:`after_step`."""

    def __init__(self, game: str, lc: Any) -> None:
        self.game, self.lc = game, lc

    def d_loss(self, disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> Dict[str, torch.Tensor]:
        fake = fake.detach()
        r, f = disc(real), disc(fake)
        if self.game == "gan":
            return {"d": bce_discriminator_loss(r, f)}
        out = {"d": wgan_critic_loss(r, f)}
        out["wasserstein"] = (r.mean() - f.mean()).detach()
        if self.game == "wgan-gp" and self.lc.gp_weight > 0:
            out["gp"] = gradient_penalty(disc, real, fake)
            out["d"] = out["d"] + self.lc.gp_weight * out["gp"]
        return out

    def g_loss(self, disc: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        s = disc(fake)
        return bce_generator_loss(s) if self.game == "gan" else wgan_generator_loss(s)

    @torch.no_grad()
    def after_step(self, disc: nn.Module) -> None:
        """WGAN: clip every critic parameter to [-clip, clip] after its update (Arjovsky et al., Alg. 1)."""
        if self.game == "wgan":
            for p in disc.parameters():
                p.clamp_(-self.lc.clip, self.lc.clip)


def build_disc(cfg: Any, spec: Any, disc_name: str, gen_d: int) -> nn.Module:
    lc = cfg.loss
    return build_discriminator(disc_name, in_channels=spec.in_channels, image_size=spec.image_size,
                               d=int(lc.disc_d or gen_d))


def disc_optim_cfg(cfg: Any):
    """``optim`` with ``loss.disc_lr`` in place of ``lr`` when set."""
    if cfg.loss.disc_lr is None:
        return cfg.optim
    from omegaconf import OmegaConf

    oc = OmegaConf.to_container(cfg.optim)
    oc["lr"] = float(cfg.loss.disc_lr)
    return OmegaConf.create(oc)


def nan_guard(images: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """``loss``, or NaN when the generator produced a non-finite pixel (the engine then stops the run)."""
    # no host sync (the engine checks losses on accelerators only every log step)
    return torch.where(torch.isfinite(images.detach()).all(), loss, torch.full_like(loss, float("nan")))


class EMA:
    """Exponential moving average of a generator's weights (``w_ema <- decay w_ema + (1 - decay) w``;
    buffers such as BN statistics are copied). ``decay`` in (0, 1)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"loss.ema = {decay} must be in (0, 1) (or 0 = off)")
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


# ------------------------------------------------------------------------------------ evaluation


def load_extractor(extractor: Optional[str], spec: Any) -> Tuple[Optional[nn.Module], Optional[nn.Module], Dict[str, Any]]:
    """The metric networks: (features for FID/KID, logits for IS, identity for the report).

    ``extractor``: a kdlab classifier (run directory, ``.safetensors`` or ``.ckpt``) trained on the same
    data set (penultimate layer / logits), ``"inception"`` (torchmetrics' Inception-v3; its weights must
    be in the torch hub cache), or None: Inception when its weights are present, else no FID/KID/IS.

    Raises:
        GeneratorMismatchError: the classifier's channels / image size differ from the data set's.
        FileNotFoundError: no such file. ValueError: "inception" without local weights.
    """
    if extractor is None and not inception_weights_available():
        return None, None, {"kind": None, "note": "no feature extractor: set loss.extractor=runs/<classifier run> "
                                                  "(kdlab train-teacher) for FID/KID/IS"}
    if extractor is None or str(extractor).lower() == "inception":
        if not inception_weights_available():
            raise ValueError("loss.extractor = 'inception' but the Inception-v3 FID weights (torch-fidelity, "
                             f"torch hub cache {torch.hub.get_dir()}) are not available offline; use a kdlab "
                             "classifier run instead")
        return InceptionExtractor("features"), InceptionExtractor("logits"), {
            "kind": "inception-v3", "name": "torchmetrics FID Inception-v3 (pool3 2048 / logits_unbiased)"}
    from kdlab.engine import load_classifier, resolve_weights

    path = resolve_weights(extractor)
    clf = load_classifier(path)
    got, want = (clf.in_channels, clf.image_size), (spec.in_channels, spec.image_size)
    if got != want:
        raise GeneratorMismatchError(
            f"metric classifier {str(path)!r} takes (channels, image size) = {got}; data set {spec.name!r} gives {want}")
    feats = ClassifierFeatures(clf, spec.mean, spec.std, "features")
    logits = ClassifierFeatures(clf, spec.mean, spec.std, "logits")
    return feats, logits, {"kind": "classifier", "name": clf.arch, "checkpoint": str(path),
                           "sha256": file_sha256(path), "num_features": feats.num_features,
                           "layer": "input of the last Linear layer (FID/KID); softmax of the logits (IS)"}


def check_output_shape(gen: nn.Module, spec: Any, where: str) -> None:
    """Raise :class:`GeneratorMismatchError` if ``gen``'s images are not the data set's ``(C, S, S)``."""
    want = (spec.in_channels, spec.image_size, spec.image_size)
    if tuple(gen.output_shape) != want:
        raise GeneratorMismatchError(
            f"{where} outputs images of shape {tuple(gen.output_shape)} (C, H, W), but data set {spec.name!r} "
            f"has images of shape {want}")


def load_teacher_generator(checkpoint: Any, spec: Any) -> Tuple[nn.Module, str]:
    """The frozen teacher generator of ``teacher.checkpoint``, checked against the data set's image shape."""
    if not checkpoint:
        raise ValueError("gan-compression needs a trained teacher generator: set teacher.checkpoint=runs/<train-gan run>")
    path = resolve_generator(checkpoint)
    gen = load_generator(path)
    check_output_shape(gen, spec, f"teacher generator {str(path)!r}")
    return gen, str(path)


def generator_profile(gen: nn.Module, latency: bool = False, iters: int = 10) -> Dict[str, Any]:
    """Name, kwargs (d, latent_dim), parameters, MACs per image (and CPU latency) of a generator."""
    g = copy.deepcopy(gen).cpu().eval()
    shape = (gen.latent_dim,)
    return {"name": gen.arch, "kwargs": dict(gen.arch_kwargs), "d": gen.d, "latent_dim": gen.latent_dim,
            "params": count_parameters(g), "macs": count_macs(g, shape),
            "latency_ms": cpu_latency_ms(g, shape, iters=iters) if latency else None}


def real_image_batches(dataset: Any, batch_size: int):
    """The images of an :class:`kdlab.data.InMemoryDataset` as [0, 1] float batches (no normalisation)."""
    imgs = dataset.images
    for i in range(0, imgs.shape[0], batch_size):
        yield imgs[i:i + batch_size].float() / 255.0


def set_metrics(real: Optional[FeatureSet], gen: FeatureSet, lc: Any, has_extractor: bool) -> Dict[str, Any]:
    """FID / KID vs real, IS and mean VoL of one generated set."""
    out: Dict[str, Any] = {"n": gen.n, "vol": float(gen.vol.mean())}
    if has_extractor and real is not None:
        out["fid"] = fid_from_features(real, gen)
        out["kid"], out["kid_std"] = kid_from_features(real, gen, lc.kid_subset_size, lc.kid_subsets, lc.sample_seed)
        out["is"], out["is_std"] = is_from_logits(gen.logits, lc.is_splits, lc.sample_seed)
    return out


def gan_finalize(method: Any, run_dir: Path, data: Any, result: Any, device: Any,
                 teacher: Optional[nn.Module] = None, teacher_path: Optional[str] = None) -> Dict[str, Any]:
    """End of a GAN run (rank 0): export the selected generator, profile it, and score it.

    Generated sets use ``loss.n_samples`` images from fixed latents (``loss.sample_seed``; the same z
    for teacher and student); the real set is the test split (``data.max_test`` caps it). Reports
    FID/KID (vs real test images), IS, the mean variance of the Laplacian, and with a teacher also the
    teacher's numbers, the FID between student and teacher samples (fidelity to the teacher, NOT a
    quality measure against real data) and the MSE to the teacher on the evaluation latents.
    Writes ``samples/generated.png`` (+ ``teacher.png``, ``side_by_side.png``) and ``samples/real.png``.
    """
    cfg, lc = method.cfg, method.cfg.loss
    run_dir = Path(run_dir)
    last = method.eval_model().eval()
    best = copy_with_state(last, result.best_state).to(device).eval()
    export = run_dir / f"{method.export_name}.safetensors"
    save_generator(best.cpu(), export, data=cfg.data.name, epoch=result.best_epoch)
    best = best.to(device)
    bs = cfg.data.eval_batch_size
    feats, logits, info = load_extractor(lc.extractor, data.spec)
    if feats is not None:
        feats, logits = feats.to(device), logits.to(device)
    has = feats is not None
    real = FeatureSet.from_batches(real_image_batches(data.test, bs), feats, logits, device)
    gen_set = FeatureSet.from_batches(generator_batches(best, lc.n_samples, best.latent_dim, lc.sample_seed, bs, device),
                                      feats, logits, device)
    generative: Dict[str, Any] = set_metrics(real, gen_set, lc, has)
    generative["real"] = {"n": real.n, "vol": float(real.vol.mean())}
    if has:
        generative["real"]["is"], generative["real"]["is_std"] = is_from_logits(real.logits, lc.is_splits, lc.sample_seed)

    samples = run_dir / "samples"
    grid_gen = generate_images(best, lc.grid_n, best.latent_dim, lc.sample_seed, bs, device)
    save_grid(grid_gen, samples / "generated.png")
    save_grid(data.test.images[: lc.grid_n].float() / 255.0, samples / "real.png")

    out: Dict[str, Any] = {
        "kind": "generator",
        "model": generator_profile(best, cfg.eval.latency, min(cfg.eval.latency_iters, 10)),
        "teacher": None,
        "generative": generative,
        "extractor": info,
        "sample_seed": lc.sample_seed,
        "weights": export.name,
        "weights_sha256": file_sha256(export),
        "val_best": result.val_best,
        "val_last": result.val_last,
        "selection_key": result.selection_key if result.val_best is not None else None,
    }
    if teacher is not None:
        teacher = teacher.to(device).eval()
        t_set = FeatureSet.from_batches(generator_batches(teacher, lc.n_samples, teacher.latent_dim, lc.sample_seed, bs,
                                                          device), feats, logits, device)
        t_metrics = set_metrics(real, t_set, lc, has)
        if has:
            generative["fidelity_fid"] = fid_from_features(t_set, gen_set)
        mse, n = 0.0, 0
        for s, t in zip(generator_batches(best, lc.n_samples, best.latent_dim, lc.sample_seed, bs, device),
                        generator_batches(teacher, lc.n_samples, teacher.latent_dim, lc.sample_seed, bs, device)):
            # images in [0, 1] here; x4 gives the MSE in the generators' [-1, 1] units (the training loss's)
            mse += float(((s - t) ** 2).mean()) * 4.0 * s.shape[0]
            n += s.shape[0]
        generative["mse_to_teacher"] = mse / n
        grid_t = generate_images(teacher, lc.grid_n, teacher.latent_dim, lc.sample_seed, bs, device)
        save_grid(grid_t, samples / "teacher.png")
        rows = []
        for i in range(0, min(lc.grid_n, 64), 8):
            rows += [grid_t[i:i + 8], grid_gen[i:i + 8]]
        save_grid(torch.cat(rows), samples / "side_by_side.png", nrow=8)
        prof = generator_profile(teacher, cfg.eval.latency, min(cfg.eval.latency_iters, 10))
        out["teacher"] = {**prof, "checkpoint": teacher_path, "sha256": file_sha256(teacher_path), "generative": t_metrics}
        out["compression_ratio"] = prof["params"] / max(out["model"]["params"], 1)
    extra = {k: v for k, v in method.summary_extra().items() if k != "teacher"}
    out.update(extra)
    return out


def is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def evaluate_generator(weights: Any, data: Any, extractor: Optional[str] = None, n_samples: int = 10000,
                       seed: int = 0, kid_subset_size: int = 1000, kid_subsets: int = 100, is_splits: int = 10,
                       batch_size: int = 500, teacher: Optional[str] = None, device: Any = "cpu") -> Dict[str, Any]:
    """Score any kdlab generator checkpoint against a data set's test images (``kdlab evaluate-gan``).

    Args:
        weights: a GAN run directory, generator ``.safetensors`` or ``.ckpt``.
        data: :class:`kdlab.data.Datasets` of the data set to compare with.
        extractor: see :func:`load_extractor`. teacher: optional teacher generator (fidelity FID, MSE).

    Returns: ``{"weights", "sha256", "data", "model": profile, "generative": {...}, "extractor": {...}}``.

    Raises:
        GeneratorMismatchError: the generator's image shape differs from the data set's (gives both).
        ValueError: too few samples for KID's subset size (gives both numbers).
    """
    from types import SimpleNamespace

    lc = SimpleNamespace(extractor=extractor, n_samples=n_samples, sample_seed=seed, kid_subset_size=kid_subset_size,
                         kid_subsets=kid_subsets, is_splits=is_splits, grid_n=64)
    check_eval_config(lc)
    path = resolve_generator(weights)
    gen = load_generator(path).to(device)
    check_output_shape(gen, data.spec, f"generator {str(path)!r}")
    if min(n_samples, len(data.test)) < kid_subset_size and extractor is not None:
        raise ValueError(f"KID subset size {kid_subset_size} is larger than the samples available ({len(data.test)} real, "
                         f"{n_samples} generated); lower --kid-subset-size")
    feats, logits, info = load_extractor(extractor, data.spec)
    if feats is not None:
        feats, logits = feats.to(device), logits.to(device)
    real = FeatureSet.from_batches(real_image_batches(data.test, batch_size), feats, logits, device)
    gs = FeatureSet.from_batches(generator_batches(gen, n_samples, gen.latent_dim, seed, batch_size, device), feats, logits, device)
    generative = set_metrics(real, gs, lc, feats is not None)
    generative["real"] = {"n": real.n, "vol": float(real.vol.mean())}
    out: Dict[str, Any] = {"weights": str(path), "sha256": file_sha256(path), "data": data.spec.name,
                           "model": generator_profile(gen), "generative": generative, "extractor": info,
                           "sample_seed": seed}
    if teacher is not None:
        t, t_path = load_teacher_generator(teacher, data.spec)
        t = t.to(device)
        ts = FeatureSet.from_batches(generator_batches(t, n_samples, t.latent_dim, seed, batch_size, device), feats, logits, device)
        if feats is not None:
            generative["fidelity_fid"] = fid_from_features(ts, gs)
        out["teacher"] = {**generator_profile(t), "checkpoint": t_path, "sha256": file_sha256(t_path),
                          "generative": set_metrics(real, ts, lc, feats is not None)}
    return out
