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
