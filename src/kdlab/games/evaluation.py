"""End-of-run evaluation of classifiers: what ``summary.json`` reports for a trained network.

Used by :meth:`kdlab.games.base.Method.finalize` (the default for classifier methods) and by
``kdlab evaluate``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from kdlab.data import make_loader
from kdlab.engine import copy_with_state, file_sha256, save_classifier
from kdlab.metrics import accuracy_under_noise, count_macs, count_parameters, cpu_latency_ms, evaluate_accuracy


def model_profile(model: nn.Module, input_shape: Sequence[int], latency: bool = True, iters: int = 30) -> Dict[str, Any]:
    """Parameter count, MACs per image and CPU latency (ms per image, batch 1) of a classifier."""
    cpu_model = copy_with_state(model, model.state_dict()).cpu().eval()
    out: Dict[str, Any] = {
        "name": getattr(model, "arch", type(model).__name__),
        "kwargs": dict(getattr(model, "arch_kwargs", {})),
        "params": count_parameters(cpu_model),
        "macs": count_macs(cpu_model, tuple(input_shape)),
    }
    out["latency_ms"] = cpu_latency_ms(cpu_model, tuple(input_shape), iters=iters) if latency else None
    return out


def heldout_metrics(model: nn.Module, loader: Any, device: Any, sigmas: Sequence[float], seed: int) -> Dict[str, Any]:
    """Clean test accuracy and accuracy under Gaussian noise (percent): one pass over ``loader`` for the
    clean accuracy and one per sigma > 0 (sigma = 0 adds no noise, so its entry is the clean accuracy)."""
    clean = evaluate_accuracy(model, loader, device=device)
    noisy = [s for s in sigmas if float(s) > 0]
    noise = accuracy_under_noise(model, loader, sigmas=noisy, device=device, seed=seed) if noisy else {}
    return {"test_acc": clean,
            "noise_acc": {str(float(s)): (noise[float(s)] if float(s) > 0 else clean) for s in sigmas}}


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two networks hold identical state (every parameter and buffer equal, bit for bit)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)


def cached_teacher_metrics(teacher: Dict[str, Any], cfg: Any) -> Optional[Dict[str, Any]]:
    """The teacher's test metrics from its own run's ``summary.json``, when they are for the same weights
    (sha256), data set, test split and noise levels; ``None`` otherwise (then they are recomputed)."""
    summary_path = Path(teacher["checkpoint"]).parent / "summary.json"
    if not summary_path.is_file():
        return None
    s = json.loads(summary_path.read_text())
    weights = summary_path.parent / str(s.get("weights", ""))
    same = (
        weights.is_file()
        and s.get("weights_sha256") == teacher["sha256"]
        and s.get("data", {}).get("name") == cfg.data.name
        and s.get("data", {}).get("max_test") == cfg.data.max_test
        and s.get("noise_seed") == cfg.eval.noise_seed
        and set(s.get("noise_acc", {})) == {str(float(x)) for x in cfg.eval.noise_sigmas}
    )
    return {"test_acc": s["test_acc_best"], "noise_acc": s["noise_acc"]} if same else None


def classifier_finalize(method: Any, run_dir: Path, data: Any, result: Any, device: Any) -> Dict[str, Any]:
    """Test the best-on-validation and the last weights, export the best as safetensors, profile them.

    Test passes: the clean accuracy and one per noise sigma > 0 of the best weights, one for the last
    weights unless they are the best ones, and the teacher's (when not cached) likewise.

    Returns the ``summary.json`` entries: model, teacher (if the method has one), val/test accuracies,
    noise accuracies (best checkpoint), the exported weights' name and hash.
    """
    cfg = method.cfg
    last_model = method.eval_model().eval()
    best_model = copy_with_state(last_model, result.best_state)
    test_loader = make_loader(data.test, cfg.data.eval_batch_size, shuffle=False, seed=cfg.seed)
    best = heldout_metrics(best_model, test_loader, device, cfg.eval.noise_sigmas, cfg.eval.noise_seed)
    shape = (data.spec.in_channels, data.spec.image_size, data.spec.image_size)
    export = Path(run_dir) / f"{method.export_name}.safetensors"
    save_classifier(best_model, export, data=cfg.data.name, epoch=result.best_epoch)
    out: Dict[str, Any] = {
        "model": model_profile(best_model, shape, cfg.eval.latency, cfg.eval.latency_iters),
        "teacher": None,
        "val_acc_best": result.val_best,
        "val_acc_last": result.val_last,
        "test_acc_best": best["test_acc"],
        # the last weights are tested only when they differ from the selected ones (best epoch != last)
        "test_acc_last": (best["test_acc"] if same_weights(best_model, last_model)
                          else evaluate_accuracy(last_model, test_loader, device=device)),
        "noise_acc": best["noise_acc"],
        "noise_seed": cfg.eval.noise_seed,
        "weights": export.name,
        "weights_sha256": file_sha256(export),
    }
    extra = method.summary_extra()
    if "teacher" in extra:
        teacher = method.frozen["teacher"]
        extra["teacher"].update(model_profile(teacher, shape, cfg.eval.latency, cfg.eval.latency_iters))
        extra["teacher"].update(
            cached_teacher_metrics(extra["teacher"], cfg)
            or heldout_metrics(teacher, test_loader, device, cfg.eval.noise_sigmas, cfg.eval.noise_seed)
        )
    out.update(extra)
    return out
