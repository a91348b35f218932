"""Optimizers and learning-rate schedules from an ``optim`` config section."""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov), Adam or AdamW with ``cfg.lr`` and ``cfg.weight_decay``.

    Raises:
        ValueError: unknown ``cfg.name`` (lists sgd, adam, adamw).
    """
    name = cfg.name.lower()
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; accepted: sgd, adam, adamw")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, epochs: int) -> Optional[LRScheduler]:
    """A per-epoch schedule: cosine to 0 over ``epochs``, multistep at ``cfg.milestones``, or none.

    Raises:
        ValueError: unknown ``cfg.scheduler`` (lists cosine, multistep, none).
    """
    name = cfg.scheduler.lower()
    if name == "none":
        return None
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if name == "multistep":
        return MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}; accepted: cosine, multistep, none")


def optim_with_lr(cfg, lr: Optional[float], key: str):
    """The ``optim`` section ``cfg`` with another learning rate (``lr`` None: ``cfg`` unchanged), for a
    player with a rate of its own (``key`` names the config key in errors).

    Raises:
        ValueError: ``lr`` <= 0.
    """
    if lr is None:
        return cfg
    if not lr > 0:
        raise ValueError(f"{key} = {lr!r} must be > 0 (or null for optim.lr)")
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(cfg)
    out["lr"] = float(lr)
    return OmegaConf.create(out)
