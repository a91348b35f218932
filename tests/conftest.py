"""Shared fixtures: small real Fashion-MNIST run configs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest

# A few seconds per run on 2 CPU cores: small real subsets, a small MLP.
SMALL_DATA: Dict[str, Any] = {
    "name": "fashion-mnist",
    "val_size": 200,
    "n_per_class": 30,
    "batch_size": 50,
    "eval_batch_size": 500,
    "max_test": 500,
}


def small_config(tmp_path: Path, **sections: Any) -> Dict[str, Any]:
    """A run config dict writing into ``tmp_path`` (merge ``sections`` over the defaults)."""
    cfg: Dict[str, Any] = {
        "name": "t",
        "method": "teacher",
        "seed": 0,
        "out_dir": str(tmp_path),
        "data": dict(SMALL_DATA),
        "model": {"name": "mlp", "kwargs": {"hidden": [64, 64]}},
        "optim": {"name": "adam", "lr": 0.002, "weight_decay": 0.0, "scheduler": "cosine"},
        "trainer": {"epochs": 3, "progress": False, "tensorboard": False, "log_every_n_steps": 2},
        "eval": {"latency": False, "noise_sigmas": [0.0, 0.2]},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
def make_config(tmp_path):
    return lambda **sections: small_config(tmp_path, **sections)
