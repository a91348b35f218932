"""One run end to end: config -> data + method -> engine loop -> metrics -> run directory.

Writes the run-directory contract of DESIGN.md: ``config.yaml``, ``metrics.jsonl``,
``summary.json``, ``checkpoints/{last,best}.ckpt``, ``<teacher|student>.safetensors`` (the
best-on-validation weights), ``report.md`` + ``plots/``, and TensorBoard events in ``tb/``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from kdlab.config import load_config, to_yaml
from kdlab.data import build_datasets, make_loader
from kdlab.engine import Trainer, atomic_write_text, copy_with_state, file_sha256, make_fabric, save_classifier
from kdlab.engine.env import git_commit, versions
from kdlab.methods import METHODS
from kdlab.metrics import accuracy_under_noise, count_macs, count_parameters, cpu_latency_ms, evaluate_accuracy


def load_run_config(sources: Sequence[Any], overrides: Sequence[str] = ()):
    """:func:`kdlab.config.load_config` with each method's ``loss`` schema."""
    return load_config(sources, overrides, loss_schema=lambda m: METHODS.get(m).Config)


def datasets_for(cfg: Any):
    """The train/val/test splits a config asks for."""
    d = cfg.data
    return build_datasets(
        name=d.name,
        root=d.root,
        val_size=d.val_size,
        n_per_class=d.n_per_class,
        subset_seed=d.subset_seed,
        augment=d.augment,
        download=d.download,
        image_size=d.image_size,
        max_test=d.max_test,
    )


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


def test_metrics(model: nn.Module, loader: Any, device: Any, sigmas: Sequence[float], seed: int) -> Dict[str, Any]:
    """Clean test accuracy and accuracy under Gaussian noise (percent)."""
    noise = accuracy_under_noise(model, loader, sigmas=list(sigmas), device=device, seed=seed)
    return {"test_acc": evaluate_accuracy(model, loader, device=device), "noise_acc": {str(float(s)): a for s, a in noise.items()}}


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


def train(cfg: Any, resume: bool = False) -> Path:
    """Run ``cfg`` and write its run directory; returns ``runs/<name>``.

    Raises:
        kdlab.engine.NonFiniteLossError: a loss became NaN/inf (``last.ckpt`` is kept).
        kdlab.data.DataNotFoundError: the data set is missing offline.
    """
    t0 = time.perf_counter()
    run_dir = Path(cfg.out_dir) / cfg.name
    method_cls = METHODS.get(cfg.method)
    fabric = make_fabric(cfg.trainer, run_dir)
    fabric.seed_everything(cfg.seed)
    data = datasets_for(cfg)
    method = method_cls(cfg, data.spec)
    if fabric.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    result = Trainer(cfg, run_dir, fabric).fit(method, data.train, data.val, resume=resume)
    if not fabric.is_global_zero:
        return run_dir

    last_model = method.eval_model().eval()
    best_model = copy_with_state(last_model, result.best_state)
    test_loader = make_loader(data.test, cfg.data.eval_batch_size, shuffle=False, seed=cfg.seed)
    device = fabric.device
    best = test_metrics(best_model, test_loader, device, cfg.eval.noise_sigmas, cfg.eval.noise_seed)
    test_acc_last = evaluate_accuracy(last_model, test_loader, device=device)
    shape = (data.spec.in_channels, data.spec.image_size, data.spec.image_size)
    export = run_dir / f"{getattr(method, 'export_name', 'model')}.safetensors"
    save_classifier(best_model, export, data=cfg.data.name, epoch=result.best_epoch)

    summary: Dict[str, Any] = {
        "name": cfg.name,
        "label": cfg.label or cfg.name,
        "method": cfg.method,
        "seed": cfg.seed,
        "model": model_profile(best_model, shape, cfg.eval.latency, cfg.eval.latency_iters),
        "teacher": None,
        "data": {
            "name": cfg.data.name,
            "n_train": len(data.train),
            "n_val": len(data.val) if data.val is not None else 0,
            "n_test": len(data.test),
            "n_per_class": cfg.data.n_per_class,
            "max_test": cfg.data.max_test,
        },
        "epochs": cfg.trainer.epochs,
        "best_epoch": result.best_epoch,
        "val_acc_best": result.val_best,
        "val_acc_last": result.val_last,
        "test_acc_best": best["test_acc"],
        "test_acc_last": test_acc_last,
        "noise_acc": best["noise_acc"],
        "selection": f"best {result.selection_key}" if result.val_best is not None else "last epoch (no validation split)",
        "weights": export.name,
        "weights_sha256": file_sha256(export),
        "noise_seed": cfg.eval.noise_seed,
        "final_losses": result.final_losses,
        "stopped_early": False,
        "wall_time_s": time.perf_counter() - t0,
        "train_time_s": result.wall_time_s,
        "versions": versions(),
        "git_commit": git_commit(),
    }
    extra = method.summary_extra()
    if "teacher" in extra:
        teacher = method.frozen["teacher"]
        extra["teacher"].update(model_profile(teacher, shape, cfg.eval.latency, cfg.eval.latency_iters))
        extra["teacher"].update(
            cached_teacher_metrics(extra["teacher"], cfg)
            or test_metrics(teacher, test_loader, device, cfg.eval.noise_sigmas, cfg.eval.noise_seed)
        )
    summary.update(extra)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    from kdlab.report import write_run_report

    write_run_report(run_dir)
    return run_dir


def evaluate(weights: str, data_overrides: Optional[Dict[str, Any]] = None, sigmas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4), seed: int = 0) -> Dict[str, Any]:
    """Evaluate a kdlab classifier file (or run directory) on a data set's test split.

    Returns:
        ``{"model": profile, "data": name, "test_acc": %, "noise_acc": {sigma: %}}``.
    """
    from kdlab.engine import load_classifier, resolve_weights
    from kdlab.engine.checkpoint import read_safetensors_metadata

    path = resolve_weights(weights)
    model = load_classifier(path)
    data_cfg = dict(data_overrides or {})
    if "name" not in data_cfg and path.suffix == ".safetensors":
        data_cfg["name"] = read_safetensors_metadata(path).get("data", "fashion-mnist")
    cfg = load_run_config([{"data": {**data_cfg, "val_size": 0}}])
    data = datasets_for(cfg)
    spec = data.spec
    got, want = (model.num_classes, model.in_channels, model.image_size), (spec.num_classes, spec.in_channels, spec.image_size)
    if got != want:
        raise ValueError(f"model {str(path)!r} expects (classes, channels, image size) = {got}; data set {spec.name!r} gives {want}")
    loader = make_loader(data.test, cfg.data.eval_batch_size, shuffle=False, seed=seed)
    device = torch.device("cpu")
    out = {"weights": str(path), "data": spec.name, "model": model_profile(model, (spec.in_channels, spec.image_size, spec.image_size))}
    out.update(test_metrics(model, loader, device, sigmas, seed))
    return out
