"""Shared fixtures: small real Fashion-MNIST run configs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import os

import pytest
import torch

# under pytest-xdist (make test: one worker per core) each worker takes its share of the cores, as a compare
# pool's workers do, rather than all of them each
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
if _WORKERS > 1:
    from kdlab.compare.plan import worker_threads

    torch.set_num_threads(worker_threads(_WORKERS))


class CPUFabric:
    """The single-process pieces of Lightning Fabric that methods use (``setup``, ``backward``), on the CPU."""

    device = torch.device("cpu")
    is_global_zero = True

    def setup(self, module, opt):
        return module, opt

    def backward(self, loss):
        loss.backward()


def ready(method: Any) -> Any:
    """``method`` set up on :class:`CPUFabric`, in train mode."""
    method.setup(CPUFabric())
    method.train()
    return method


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
    if cfg["data"].get("transfer") not in (None, "train", "none", "synth") and "n_per_class" not in sections.get("data", {}):
        cfg["data"].pop("n_per_class", None)  # the labelled budget is refused beside another transfer source
    return cfg


@pytest.fixture
def make_config(tmp_path):
    return lambda **sections: small_config(tmp_path, **sections)


def gan_student_config(tmp_path: Path, teacher: Path, **sections: Any) -> Dict[str, Any]:
    """A data-free ``gan-compression`` run (d = 4 student, 3 steps of 16 latents) of ``teacher``, with a
    quick evaluation; ``sections`` merge over it."""
    cfg: Dict[str, Any] = {
        "name": "gs", "method": "gan-compression", "out_dir": str(tmp_path), "teacher": {"checkpoint": str(teacher)},
        "data": {"val_size": 0, "transfer": "none", "steps_per_epoch": 3, "batch_size": 16, "max_test": 200},
        "model": {"name": "dcgan", "kwargs": {"d": 4}},
        "optim": {"name": "adam", "lr": 0.001, "betas": [0.5, 0.999], "weight_decay": 0.0, "scheduler": "none"},
        "trainer": {"epochs": 1, "progress": False, "tensorboard": False, "log_every_n_steps": 1},
        "eval": {"latency": False, "n_samples": 200, "kid_subset_size": 50, "kid_subsets": 2, "is_splits": 1, "grid_n": 4},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


@pytest.fixture(scope="session")
def gen_teacher(tmp_path_factory):
    """A random DCGAN teacher generator (d = 8, latent 16) saved as a kdlab generator (read-only)."""
    import torch

    from kdlab.engine.generators import save_generator
    from kdlab.models import build_generator

    torch.manual_seed(0)
    return save_generator(build_generator("dcgan", 1, 28, d=8, latent_dim=16),
                          tmp_path_factory.mktemp("gen") / "tg.safetensors", data="fashion-mnist")
