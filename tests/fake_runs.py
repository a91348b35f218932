"""A finished run directory written without training, for the tests of ``kdlab compare`` whose stand-in
trainer replaces :func:`kdlab.runner.train` (tests/test_compare.py, tests/test_compare_claims.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from kdlab.config import to_yaml


def write_finished_run(cfg: Any, acc: float, metrics: List[Dict[str, Any]], noise_acc: Dict[str, float],
                       params: int = 89_610, macs: int = 89_400) -> Path:
    """``<out_dir>/<name>/`` with the resolved ``config.yaml``, ``metrics.jsonl`` (one row per ``metrics``
    entry) and a ``summary.json`` whose best-on-validation test accuracy is ``acc`` (last epoch: acc - 0.5)."""
    run = Path(cfg.out_dir) / cfg.name
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(to_yaml(cfg))
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
    (run / "summary.json").write_text(json.dumps({
        "name": cfg.name, "label": cfg.label, "method": cfg.method, "seed": cfg.seed,
        "test_acc_best": acc, "test_acc_last": acc - 0.5, "val_acc_best": acc, "best_epoch": 1, "epochs": 2,
        "noise_acc": noise_acc, "train_time_s": 2.0, "wall_time_s": 3.0,
        "model": {"name": cfg.model.name, "params": params, "macs": macs, "latency_ms": 0.05},
        "teacher": {"name": "lenet", "params": 3_000_000, "test_acc": 90.0, "checkpoint": cfg.teacher.checkpoint}}))
    return run


def write_finished_generator_run(cfg: Any, fid: float, vol: float, teacher_fid: float = 20.0,
                                 params: int = 5_000, macs: int = 400_000) -> Path:
    """``<out_dir>/<name>/`` of a generator run (kind ``generator``, as :func:`kdlab.games.gan_eval.gan_finalize`
    writes it): ``generative`` FID ``fid`` (KID fid / 1000, fidelity FID fid / 2), VoL ``vol``, the teacher's FID
    ``teacher_fid`` measured in the same run, and a training loss that decreases over 8 logged steps."""
    run = Path(cfg.out_dir) / cfg.name
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(to_yaml(cfg))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": 10 * (i + 1), "train/loss": 1.0 / (i + 1)}) + "\n"
                                               for i in range(8)))
    teacher = {"name": "dcgan", "d": 32, "params": 400_000, "checkpoint": cfg.teacher.checkpoint,
               "generative": {"fid": teacher_fid, "kid": teacher_fid / 1000, "is": 7.0, "vol": 90.0}}
    (run / "summary.json").write_text(json.dumps({
        "name": cfg.name, "label": cfg.label, "method": cfg.method, "seed": cfg.seed, "kind": "generator",
        "train_time_s": 2.0, "wall_time_s": 3.0, "compression_ratio": 400_000 / params,
        "model": {"name": cfg.model.name, "d": cfg.model.kwargs.get("d"), "params": params, "macs": macs},
        "teacher": teacher if cfg.teacher.checkpoint else None,
        "generative": {"fid": fid, "kid": fid / 1000, "is": 6.0, "vol": vol, "fidelity_fid": fid / 2,
                       "mse_to_teacher": 0.1, "real": {"n": 100, "vol": 100.0, "is": 8.0}}}))
    return run


def write_finished_translation_run(cfg: Any, fid: float, domain_acc: float, mae: float, teacher_fid: float = 20.0,
                                   params: int = 5_000, macs: int = 400_000) -> Path:
    """``<out_dir>/<name>/`` of an image-to-image student run on a paired task (as
    :func:`kdlab.games.i2i_eval.translation_finalize` writes it): ``translation`` FID ``fid`` (KID fid / 1000),
    MAE ``mae``, SSIM 1 - mae, domain accuracy ``domain_acc`` (a fraction); ``fidelity`` FID fid / 2 and MAE
    mae / 2; the teacher's translation scores (FID ``teacher_fid``) measured in the same run."""
    run = Path(cfg.out_dir) / cfg.name
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(to_yaml(cfg))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": 10 * (i + 1), "train/loss": 1.0 / (i + 1)}) + "\n"
                                               for i in range(8)))
    scores = {"n": 100, "fid": fid, "kid": fid / 1000, "mae": mae, "ssim": 1 - mae,
              "domain_accuracy": {"accuracy": domain_acc}}
    teacher = {"name": "unet", "params": 400_000, "checkpoint": cfg.teacher.checkpoint,
               "translation": {"n": 100, "fid": teacher_fid, "kid": teacher_fid / 1000, "mae": 0.1, "ssim": 0.9,
                               "domain_accuracy": {"accuracy": 0.9}}}
    (run / "summary.json").write_text(json.dumps({
        "name": cfg.name, "label": cfg.label, "method": cfg.method, "seed": cfg.seed, "kind": "generator",
        "train_time_s": 2.0, "wall_time_s": 3.0, "compression_ratio": 400_000 / params,
        "model": {"name": cfg.model.name, "kwargs": dict(cfg.model.kwargs), "params": params, "macs": macs},
        "teacher": teacher, "translation": scores, "fidelity": {"fid": fid / 2, "mae": mae / 2, "ssim": 0.9}}))
    return run

