"""End of an image-to-image student run: export, profile (parameters, MACs) and the distances of the
student's translations to the teacher's and, for paired data, to the ground truth; sample grids
(input | teacher | student rows).

FID/KID with the domain extractor and the per-class accuracy of translated images are the translation
metrics' job (the ``generative`` section only holds the distances computed here).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterator

import torch
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure

from kdlab.engine import copy_with_state, file_sha256
from kdlab.engine.generators import save_generator
from kdlab.metrics import count_macs, count_parameters
from kdlab.metrics.generative import save_grid


def to_unit(images: torch.Tensor, channels: int) -> torch.Tensor:
    """[-1, 1] images -> [0, 1], grey images repeated to ``channels`` (so inputs and outputs share a grid)."""
    x = ((images.detach().float() + 1.0) / 2.0).clamp(0, 1)
    return x.repeat(1, channels, 1, 1) if x.shape[1] == 1 and channels > 1 else x


@torch.no_grad()
def save_translation_grid(inputs: torch.Tensor, teacher: nn.Module, student: nn.Module, path: Any) -> Path:
    """One PNG: row 1 the inputs, row 2 the teacher's translations, row 3 the student's (eval mode)."""
    dev = next(student.parameters()).device
    was = student.training
    student.eval()
    try:
        x = inputs.to(dev)
        t, s = teacher(x), student(x)
    finally:
        student.train(was)
    c = max(x.shape[1], t.shape[1])
    grid = torch.cat([to_unit(x, c), to_unit(t, c), to_unit(s, c)]).cpu()
    return save_grid(grid, path, nrow=len(x))


def translation_profile(gen: nn.Module) -> Dict[str, Any]:
    """Name, kwargs, parameters and MACs per image of an image-to-image generator."""
    g = copy.deepcopy(gen).cpu().eval()
    return {"name": gen.arch, "kwargs": dict(gen.arch_kwargs), "ngf": getattr(gen, "ngf", None),
            "params": count_parameters(g), "macs": count_macs(g, tuple(gen.input_shape))}


def _batches(dataset: Any, batch_size: int, seed: int) -> Iterator[Any]:
    from kdlab.data.loaders import make_loader

    yield from make_loader(dataset, batch_size, shuffle=False, seed=seed)


@torch.no_grad()
def translation_distances(student: nn.Module, teacher: nn.Module, batches: Any, device: Any,
                          limit: int) -> Dict[str, Any]:
    """Mean distances over up to ``limit`` inputs: MSE and MAE of the student's images to the teacher's
    ([-1, 1] units), and, when batches carry ``target``, MAE and SSIM (torchmetrics, [0, 1] images) of
    the student's and the teacher's images to the ground truth."""
    sums: Dict[str, float] = {}
    n = 0
    for batch in batches:
        x = batch.x.to(device)[: limit - n]
        s, t = student(x), teacher(x)
        k = len(x)
        parts = {"mse_to_teacher": ((s - t) ** 2).mean(), "mae_to_teacher": (s - t).abs().mean()}
        if batch.target is not None:
            y = batch.target.to(device)[:k]
            for who, img in (("", s), ("teacher_", t)):
                parts[f"{who}mae_to_target"] = (img - y).abs().mean()
                parts[f"{who}ssim_to_target"] = structural_similarity_index_measure(
                    to_unit(img, img.shape[1]), to_unit(y, y.shape[1]), data_range=1.0)
        for key, v in parts.items():
            sums[key] = sums.get(key, 0.0) + float(v) * k
        n += k
        if n >= limit:
            break
    return {"n": n, **{k: v / max(n, 1) for k, v in sums.items()}}


def i2i_finalize(method: Any, run_dir: Path, data: Any, result: Any, device: Any) -> Dict[str, Any]:
    """Export the selected student (``student.safetensors``), profile student and teacher, score both on
    the test split (:func:`translation_distances`, ``loss.n_samples`` inputs at most) and write
    ``samples/translated.png`` (input | teacher | student on the first test inputs)."""
    cfg, lc = method.cfg, method.cfg.loss
    run_dir = Path(run_dir)
    best = copy_with_state(method.eval_model(), result.best_state).to(device).eval()
    export = run_dir / f"{method.export_name}.safetensors"
    save_generator(copy.deepcopy(best).cpu(), export, data=cfg.data.name, epoch=result.best_epoch)
    teacher = method.frozen["teacher"].to(device).eval()
    bs = int(cfg.data.eval_batch_size)
    dist = translation_distances(best, teacher, _batches(data.test, bs, cfg.seed), device, int(lc.n_samples))
    first = next(iter(_batches(data.test, min(bs, 8), cfg.seed)), None)
    if first is not None:
        save_translation_grid(first.x[:8], teacher, best, run_dir / "samples" / "translated.png")
    model, t_prof = translation_profile(best), translation_profile(teacher)
    out: Dict[str, Any] = {
        "kind": "generator",
        "model": model,
        "teacher": {**t_prof, "checkpoint": method.teacher_path, "sha256": file_sha256(method.teacher_path)},
        "compression_ratio": t_prof["params"] / max(model["params"], 1),
        "mac_ratio": t_prof["macs"] / max(model["macs"], 1),
        "generative": {"n": dist["n"], "mse_to_teacher": dist.get("mse_to_teacher")},
        "translation": dist,
        "weights": export.name,
        "weights_sha256": file_sha256(export),
        "val_best": result.val_best,
        "val_last": result.val_last,
        "selection_key": result.selection_key if result.val_best is not None else None,
    }
    out.update({k: v for k, v in method.summary_extra().items() if k != "teacher"})
    return out
