"""Validation, sample grids and the end-of-run evaluation of image-to-image generators (Pix2Pix and
CycleGAN teachers, image-to-image students).

The end-of-run scores (:func:`translation_finalize`, on the test split, see
:mod:`kdlab.metrics.translation`): FID/KID of the translations against the test split's output-domain
images with the output domain's kdlab classifier (``eval.extractor``), MAE and SSIM to the ground truth
(paired tasks), the classifier's accuracy on the translations (overall and per class: the stand-in for
Cityscapes' FCN-score), params/MACs, and for a student also the teacher's scores, the fidelity to the
teacher (MAE and FID between their translations) and the compression ratios.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from kdlab.data.batch import Batch, as_batch


@torch.no_grad()
def mae_to_target(gen: nn.Module, loader: Any, device: Any) -> float:
    """Mean absolute error between ``gen(batch.x)`` and ``batch.target`` over ``loader``, in [0, 1] pixel
    units (half the [-1, 1] difference); ``gen`` in eval mode meanwhile."""
    was = gen.training
    gen.eval()
    total, n = 0.0, 0
    for item in loader:
        b = as_batch(item).to(device)
        total += float((gen(b.x) - b.target).abs().sum()) / 2.0
        n += b.target.numel()
    gen.train(was)
    return total / max(n, 1)


@torch.no_grad()
def cycle_error(g_ab: nn.Module, g_ba: nn.Module, loader: Any, device: Any) -> float:
    """``(|F(G(a)) - a|_1 + |G(F(b)) - b|_1) / 2`` as per-element means over ``loader`` ([-1, 1] units)."""
    was = (g_ab.training, g_ba.training)
    g_ab.eval()
    g_ba.eval()
    total, n = 0.0, 0
    for item in loader:
        b = as_batch(item).to(device)
        total += float((g_ba(g_ab(b.x)) - b.x).abs().mean() + (g_ab(g_ba(b.target)) - b.target).abs().mean()) / 2.0
        n += 1
    g_ab.train(was[0])
    g_ba.train(was[1])
    return total / max(n, 1)


def grid_examples(dataset: Any, n: int) -> Batch:
    """The first ``n`` rows of a translation data set as one :class:`Batch` (fixed inputs of the grids)."""
    rows = list(range(min(n, len(dataset))))
    if hasattr(dataset, "__getitems__"):
        return as_batch(dataset.__getitems__(rows))
    items = [as_batch(dataset[i]) for i in rows]
    return Batch(x=torch.stack([b.x for b in items]), target=torch.stack([b.target for b in items]))


@torch.no_grad()
def save_translation_grid(path: Path, inputs: torch.Tensor, outputs: Dict[str, torch.Tensor],
                          target: Optional[torch.Tensor]) -> None:
    """One column per example; rows: input, each output (e.g. teacher, student), target. Images in [-1, 1];
    grey and RGB rows are mixed by repeating grey channels."""
    from kdlab.metrics.generative import save_grid

    rows = [inputs] + list(outputs.values()) + ([target] if target is not None else [])
    c = max(r.shape[1] for r in rows)
    rows = [r.detach().cpu().float().expand(-1, c, -1, -1) if r.shape[1] == 1 else r.detach().cpu().float() for r in rows]
    save_grid((torch.cat(rows) + 1.0) / 2.0, path, nrow=inputs.shape[0])


def translation_grid(method: Any, epoch: int) -> None:
    """``samples/epoch_NNN.png``: the method's fixed grid inputs through :meth:`eval_model` (and its
    frozen teacher, if any), written by rank 0 after every epoch."""
    if method.fabric is not None and not method.fabric.is_global_zero:
        return
    fixed = getattr(method, "grid_batch", None)
    if fixed is None:
        return
    gen = method.eval_model()
    dev = next(gen.parameters()).device
    was = gen.training
    gen.eval()
    x = fixed.x.to(dev)
    with torch.no_grad():
        outs = {}
        if "teacher" in method.frozen:
            outs["teacher"] = method.frozen["teacher"](x)
        outs["output"] = gen(x)
    gen.train(was)
    path = Path(method.cfg.out_dir) / method.cfg.name / "samples" / f"epoch_{epoch + 1:03d}.png"
    save_translation_grid(path, x, outs, fixed.target)


def _extractor_spec(spec: Any) -> Any:
    """The DataSpec the output domain's classifier was trained on: the ``target_domain`` data set's (its
    channels, size and normalisation), else the task's output side with [-1, 1] normalisation (folders)."""
    from dataclasses import replace

    from kdlab.data import dataset_spec

    if spec.target_domain:
        return dataset_spec(spec.target_domain, image_size=spec.image_size)
    c = spec.out_channels
    return replace(spec, in_channels=c, target_channels=None, pairing=None, mean=(0.5,) * c, std=(0.5,) * c)


def _translations(gen: nn.Module, dataset: Any, batch_size: int, device: Any):
    """(fake [N, C_t, H, W], target [N, C_t, H, W], y [N] or None) of ``gen`` on ``dataset``, on the CPU."""
    from kdlab.metrics.translation import translate

    fakes, targets, ys = [], [], []
    for _, fake, target, y in translate(gen, dataset, batch_size, device):
        fakes.append(fake.cpu())
        targets.append(target.cpu())
        ys.append(None if y is None else y.cpu())
    y = None if any(v is None for v in ys) else torch.cat(ys)
    return torch.cat(fakes), torch.cat(targets), y


def _chunks(*tensors: torch.Tensor, size: int = 500):
    for i in range(0, tensors[0].shape[0], size):
        yield tuple(t[i:i + size] for t in tensors)


def score_translation(gen: nn.Module, data: Any, lc: Any, device: Any, teacher: Optional[nn.Module] = None,
                      batch_size: int = 500) -> Dict[str, Any]:
    """Score ``gen`` (and ``teacher``) on the test split of a translation task.

    Per generator: FID / KID of its translations against the test split's output-domain images with the
    output domain's classifier ``lc.extractor`` (KID's subset size capped at the smaller set, recorded);
    MAE / SSIM to the ground truth (paired tasks); the classifier's accuracy on the translations (paired,
    labelled tasks: overall, per class, mean class). With a teacher: ``fidelity`` = MAE / SSIM and FID
    between the student's and the teacher's translations of the same inputs.

    Returns: ``{"model" | "student": {...}, "teacher": {...}, "fidelity": {...}, "extractor": {...}}``.

    Raises: TeacherMismatchError: an extractor whose channels / size differ from the output domain's.
    """
    from kdlab.engine.loading import load_extractor
    from kdlab.metrics.generative import FeatureSet, fid_from_features, kid_from_features, unit_range
    from kdlab.metrics.translation import domain_accuracy, paired_errors

    spec, test = data.spec, data.test
    ext_spec = _extractor_spec(spec)
    feats, logits, info = load_extractor(lc.extractor, ext_spec)
    if feats is not None:
        feats, logits = feats.to(device), logits.to(device)
    real = None
    if feats is not None:
        real = FeatureSet.from_batches((t.float() / 255.0 for (t,) in _chunks(test.target, size=batch_size)),
                                       feats, None, device)
    gens = {"teacher": teacher, "student": gen} if teacher is not None else {"model": gen}
    out: Dict[str, Any] = {"extractor": info}
    fakes: Dict[str, torch.Tensor] = {}
    sets: Dict[str, Any] = {}
    for name, g in gens.items():
        fake, target, y = _translations(g.to(device), test, batch_size, device)
        fakes[name] = fake
        row: Dict[str, Any] = {"n": int(fake.shape[0])}
        if spec.pairing == "paired":
            row.update(paired_errors(_chunks(fake, target, size=batch_size)))
        if real is not None:
            sets[name] = FeatureSet.from_batches((unit_range(f) for (f,) in _chunks(fake, size=batch_size)),
                                                 feats, None, device)
            k = min(lc.kid_subset_size, real.n, sets[name].n)
            row["fid"] = fid_from_features(real, sets[name])
            row["kid"], row["kid_std"] = kid_from_features(real, sets[name], k, lc.kid_subsets, lc.sample_seed)
            row["kid_subset_size"] = k
            if spec.pairing == "paired" and y is not None and spec.target_domain:
                row["domain_accuracy"] = domain_accuracy(logits, fake, y, ext_spec.num_classes, batch_size)
        out[name] = row
    if teacher is not None:
        fid = {"fid": fid_from_features(sets["teacher"], sets["student"])} if sets else {}
        out["fidelity"] = {**paired_errors(_chunks(fakes["student"], fakes["teacher"], size=batch_size)), **fid}
    return out


def translation_finalize(method: Any, run_dir: Any, data: Any, result: Any, device: Any,
                         teacher: Optional[nn.Module] = None, teacher_path: Optional[str] = None) -> Dict[str, Any]:
    """End of an image-to-image run (rank 0): export the selected generator, score it on the test split
    (with the teacher beside it for students), write ``samples/translations.png``; returns the
    ``summary.json`` entries (``kind``, ``model``, ``translation``, ``teacher``, ``compression`` ...)."""
    from kdlab.engine import copy_with_state, file_sha256
    from kdlab.engine.generators import save_generator
    from kdlab.games.gan_eval import generator_profile
    from kdlab.metrics.translation import compression_table

    cfg, lc = method.cfg, method.cfg.eval
    run_dir = Path(run_dir)
    last = method.eval_model().eval()
    best = copy_with_state(last, result.best_state).to(device).eval()
    export = run_dir / f"{method.export_name}.safetensors"
    save_generator(copy.deepcopy(best).cpu(), export, data=cfg.data.name, epoch=result.best_epoch)
    scores = score_translation(best, data, lc, device, teacher=teacher, batch_size=cfg.data.eval_batch_size)
    fixed = grid_examples(data.test, lc.grid_n)
    with torch.no_grad():
        x = fixed.x.to(device)
        outs = {"teacher": teacher.to(device).eval()(x)} if teacher is not None else {}
        outs["output"] = best(x)
    save_translation_grid(run_dir / "samples" / "translations.png", x, outs, fixed.target)
    out: Dict[str, Any] = {
        "kind": "generator",
        "task": {"name": data.spec.name, "pairing": data.spec.pairing, "target_domain": data.spec.target_domain},
        "model": generator_profile(best, cfg.eval.latency, min(cfg.eval.latency_iters, 10)),
        "translation": scores["student"] if teacher is not None else scores["model"],
        "extractor": scores.get("extractor"),
        "weights": export.name,
        "weights_sha256": file_sha256(export),
        "val_best": result.val_best,
        "val_last": result.val_last,
        "selection_key": result.selection_key if result.val_best is not None else None,
        "teacher": None,
    }
    if teacher is not None:
        prof = generator_profile(teacher, cfg.eval.latency, min(cfg.eval.latency_iters, 10))
        out["teacher"] = {**prof, "checkpoint": teacher_path, "sha256": file_sha256(teacher_path),
                          "translation": scores["teacher"]}
        out["fidelity"] = scores["fidelity"]
        out["compression"] = compression_table(copy.deepcopy(teacher).cpu(), copy.deepcopy(best).cpu(),
                                               tuple(best.input_shape))
        out["compression_ratio"] = out["compression"]["params_ratio"]
    out.update({k: v for k, v in method.summary_extra().items() if k != "teacher"})
    return out
