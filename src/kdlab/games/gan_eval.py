"""End-of-run evaluation of generators: export, profile and FID/KID/IS/variance of Laplacian
(``gan_finalize``), and ``kdlab evaluate-gan`` (``evaluate_generator``).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from kdlab.engine import copy_with_state, file_sha256
from kdlab.engine.generators import load_generator, resolve_generator, save_generator
from kdlab.engine.loading import check_generator_shape, load_extractor, load_network
from kdlab.games.gan_config import check_eval_config
from kdlab.metrics import count_macs, count_parameters, cpu_latency_ms
from kdlab.metrics.generative import (
    FeatureSet,
    fid_from_features,
    generate_images,
    generator_batches,
    is_from_logits,
    kid_from_features,
    save_grid,
)


def generator_profile(gen: nn.Module, latency: bool = False, iters: int = 10) -> Dict[str, Any]:
    """Name, kwargs (d, latent_dim), parameters, MACs per image (and CPU latency) of a generator (latent or
    image input: ``gen.input_shape``)."""
    g = copy.deepcopy(gen).cpu().eval()
    shape = tuple(gen.input_shape)
    return {"name": gen.arch, "kwargs": dict(gen.arch_kwargs), "d": getattr(gen, "d", None), "latent_dim": gen.latent_dim,
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


def paired_sets(student: nn.Module, teacher: nn.Module, lc: Any, batch_size: int, feats: Optional[nn.Module],
                logits: Optional[nn.Module], device: Any) -> Tuple[FeatureSet, FeatureSet, float]:
    """``(student set, teacher set, MSE)`` of ``lc.n_samples`` images of each generator on the same fixed latents
    (``lc.sample_seed``), each generated once: the MSE between the two is in the generators' [-1, 1] units (the
    training loss's), averaged over pixels and images."""
    s_parts, t_parts, sq, n = [], [], 0.0, 0
    for s, t in zip(generator_batches(student, lc.n_samples, student.latent_dim, lc.sample_seed, batch_size, device),
                    generator_batches(teacher, lc.n_samples, teacher.latent_dim, lc.sample_seed, batch_size, device)):
        s_parts.append(FeatureSet.from_batches([s], feats, logits, device))
        t_parts.append(FeatureSet.from_batches([t], feats, logits, device))
        sq += float(((s - t) ** 2).mean()) * 4.0 * s.shape[0]  # images in [0, 1] here: x4 for [-1, 1] units
        n += s.shape[0]
    return FeatureSet.cat(s_parts), FeatureSet.cat(t_parts), sq / n


def gan_finalize(method: Any, run_dir: Path, data: Any, result: Any, device: Any,
                 teacher: Optional[nn.Module] = None, teacher_path: Optional[str] = None) -> Dict[str, Any]:
    """End of a GAN run (rank 0): export the selected generator, profile it, and score it.

    Generated sets use ``eval.n_samples`` images from fixed latents (``eval.sample_seed``; the same z
    for teacher and student); the real set is the test split (``data.max_test`` caps it). Reports
    FID/KID (vs real test images), IS, the mean variance of the Laplacian, and with a teacher also the
    teacher's numbers, the FID between student and teacher samples (fidelity to the teacher, NOT a
    quality measure against real data) and the MSE to the teacher on the evaluation latents.
    Writes ``samples/generated.png`` (+ ``teacher.png``, ``side_by_side.png``) and ``samples/real.png``.
    """
    cfg, lc = method.cfg, method.cfg.eval
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
    if teacher is not None:
        teacher = teacher.to(device).eval()
        gen_set, t_set, mse = paired_sets(best, teacher, lc, bs, feats, logits, device)
    else:
        gen_set = FeatureSet.from_batches(generator_batches(best, lc.n_samples, best.latent_dim, lc.sample_seed, bs,
                                                            device), feats, logits, device)
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
        t_metrics = set_metrics(real, t_set, lc, has)
        if has:
            generative["fidelity_fid"] = fid_from_features(t_set, gen_set)
        generative["mse_to_teacher"] = mse
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
    check_generator_shape(gen, data.spec, f"generator {str(path)!r}")
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
        t, t_path = load_network(teacher, data.spec, kind="generator")
        t = t.to(device)
        ts = FeatureSet.from_batches(generator_batches(t, n_samples, t.latent_dim, seed, batch_size, device), feats, logits, device)
        if feats is not None:
            generative["fidelity_fid"] = fid_from_features(ts, gs)
        out["teacher"] = {**generator_profile(t), "checkpoint": t_path, "sha256": file_sha256(t_path),
                          "generative": set_metrics(real, ts, lc, feats is not None)}
    return out
