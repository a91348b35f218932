"""Optimizers and learning-rate schedules from an ``optim`` config section."""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Optional

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, MultiStepLR


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
    """A per-epoch schedule: cosine to 0 over ``epochs``, multistep at ``cfg.milestones``, linear, or none.

    ``linear`` (Pix2Pix/CycleGAN, the VEM paper's "decays to zero linearly"): the rate stays at ``lr`` for
    the first ``cfg.decay_start`` epochs (null: half of ``epochs``), then after epoch ``e`` (0-based) is
    ``lr * (1 - (e + 1 - decay_start) / (epochs - decay_start + 1))``, the public pix2pix code's rule.

    Raises:
        ValueError: unknown ``cfg.scheduler`` (lists them); ``decay_start`` > ``epochs``.
    """
    name = cfg.scheduler.lower()
    if name == "none":
        return None
    if name == "linear":
        start = epochs // 2 if getattr(cfg, "decay_start", None) is None else int(cfg.decay_start)
        if start > epochs:
            raise ValueError(f"optim.decay_start = {start} is after the last epoch (trainer.epochs = {epochs})")
        span = float(epochs - start + 1)
        return LambdaLR(optimizer, lambda e: 1.0 - max(0, e + 1 - start) / span)
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if name == "multistep":
        return MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}; accepted: cosine, multistep, linear, none")


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


def schedules(method: Any) -> Dict[str, Any]:
    """Per player: the initial learning rate of each parameter group and the cosine schedule's length."""
    out = {}
    for name, opt in method.optimizers.items():
        if opt is None:
            continue
        sched = method.schedulers.get(name)
        groups = getattr(opt, "optimizer", opt).param_groups
        out[name] = ([g.get("initial_lr", g["lr"]) for g in groups], getattr(sched, "T_max", None))
    return out


def apply_schedules(method: Any, fresh: Dict[str, Any]) -> None:
    """After loading a checkpoint: put each player's learning rate where the new config's schedule has it
    now (base rates from ``fresh``; a cosine schedule also gets the new length), keeping the optimizer
    state (moments, step counts)."""
    from torch.optim.lr_scheduler import CosineAnnealingLR

    for name, (base, t_max) in fresh.items():
        opt, sched = method.optimizers[name], method.schedulers.get(name)
        groups = getattr(opt, "optimizer", opt).param_groups
        if sched is None:
            for g, lr in zip(groups, base):
                g["lr"] = lr
            continue
        old = list(sched.base_lrs)
        sched.base_lrs = list(base)
        for g, lr, was in zip(groups, base, old):
            g["initial_lr"] = lr
            if isinstance(sched, CosineAnnealingLR):
                sched.T_max = t_max
                g["lr"] = sched.eta_min + (lr - sched.eta_min) * (1 + math.cos(math.pi * sched.last_epoch / t_max)) / 2
            elif was:  # multistep and others: decays are factors of the base rate
                g["lr"] = g["lr"] * lr / was
        sched._last_lr = [g["lr"] for g in groups]
