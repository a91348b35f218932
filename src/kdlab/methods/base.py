"""The method interface: a training game that owns its players and their optimizers.

A method is registered by name in :data:`METHODS` and declares the schema of its config section
``loss`` as a nested dataclass ``Config``. The engine (:class:`kdlab.engine.Trainer`) calls
:meth:`Method.setup` once, then :meth:`Method.training_step` per batch and
:meth:`Method.on_epoch_end` per epoch; the method does its own ``fabric.backward`` and optimizer
steps, so games that alternate several optimizers (GANs, KDGAN) fit the same loop.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from kdlab.engine import build_optimizer, build_scheduler
from kdlab.engine.checkpoint import classifier_metadata
from kdlab.metrics import evaluate_accuracy
from kdlab.registry import Registry

METHODS = Registry("method")


class Method(ABC):
    """Base class. Subclasses build their players in ``__init__`` via :meth:`add_player`.

    Args:
        cfg: the full run config (``kdlab.config.RunConfig`` as a DictConfig).
        spec: the data set's :class:`kdlab.data.DataSpec` (classes, channels, image size).
    """

    @dataclass
    class Config:
        """No method-specific keys."""

    #: the validation metric that selects the best checkpoint, and whether higher is better
    selection_key: str = "val/acc"
    selection_mode: str = "max"
    #: file stem of the exported weights (``<export_name>.safetensors``)
    export_name: str = "model"

    def __init__(self, cfg: Any, spec: Any) -> None:
        self.cfg = cfg
        self.spec = spec
        self.fabric = None
        self.players: Dict[str, nn.Module] = {}
        self.optimizers: Dict[str, Optional[torch.optim.Optimizer]] = {}
        self.schedulers: Dict[str, Any] = {}
        self.frozen: Dict[str, nn.Module] = {}

    # -- building ----------------------------------------------------------------------------
    def add_player(self, name: str, module: nn.Module, optim_cfg: Any = None) -> None:
        """Register a trainable module with an optimizer/schedule from ``optim_cfg`` (default ``cfg.optim``)."""
        optim_cfg = optim_cfg if optim_cfg is not None else self.cfg.optim
        params = [p for p in module.parameters() if p.requires_grad]
        opt = build_optimizer(params, optim_cfg)
        self.players[name] = module
        self.optimizers[name] = opt
        self.schedulers[name] = build_scheduler(opt, optim_cfg, self.cfg.trainer.epochs)

    def add_frozen(self, name: str, module: nn.Module) -> None:
        """Register a fixed network (e.g. the teacher): eval mode, no gradients, not checkpointed."""
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        self.frozen[name] = module

    def setup(self, fabric: Any) -> None:
        """Move players to Fabric's device (DDP-wrapped where applicable) and frozen nets to the device."""
        self.fabric = fabric
        for name in list(self.players):
            module, opt = fabric.setup(self.players[name], self.optimizers[name])
            self.players[name], self.optimizers[name] = module, opt
        for name, module in self.frozen.items():
            self.frozen[name] = module.to(fabric.device)

    # -- the game ----------------------------------------------------------------------------
    @abstractmethod
    def training_step(self, batch: Tuple[torch.Tensor, torch.Tensor], step: int) -> Dict[str, torch.Tensor]:
        """One optimisation step on ``batch = (x [B,C,H,W], y [B])``; returns named scalar losses incl. ``loss``."""

    @abstractmethod
    def eval_model(self) -> nn.Module:
        """The network that is validated, tested and exported (unwrapped from Fabric/DDP)."""

    def validate(self, loader: Any, device: Any) -> Dict[str, float]:
        """Validation metrics logged each epoch; must hold :attr:`selection_key`.

        Default: top-1 accuracy (percent) of :meth:`eval_model` on ``loader``.
        """
        return {"val/acc": evaluate_accuracy(self.eval_model(), loader, device=device)}

    def export_state(self, **metadata: Any) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
        """(CPU copy of :meth:`eval_model`'s state_dict, metadata to rebuild it) for checkpoints/export.

        Default: a registry classifier (see :func:`kdlab.engine.checkpoint.classifier_metadata`).
        """
        model = self.eval_model()
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return state, classifier_metadata(model, **metadata)

    def step_optimizer(self, name: str, loss: torch.Tensor) -> None:
        """zero_grad, ``fabric.backward(loss)``, step for player ``name``."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        opt.step()

    def train(self) -> None:
        for module in self.players.values():
            module.train()
        for module in self.frozen.values():
            module.eval()

    def on_epoch_end(self, epoch: int) -> None:
        for sched in self.schedulers.values():
            if sched is not None:
                sched.step()

    def learning_rates(self) -> Dict[str, float]:
        return {n: float(o.param_groups[0]["lr"]) for n, o in self.optimizers.items() if o is not None}

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {
            "players": {n: unwrap(m).state_dict() for n, m in self.players.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items() if o is not None},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items() if s is not None},
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for n, m in self.players.items():
            unwrap(m).load_state_dict(state["players"][n])
        for n, o in self.optimizers.items():
            if o is not None:
                o.load_state_dict(state["optimizers"][n])
        for n, s in self.schedulers.items():
            if s is not None:
                s.load_state_dict(state["schedulers"][n])

    def finalize(self, run_dir: Any, data: Any, result: Any, device: Any) -> Dict[str, Any]:
        """After training (rank 0): test, export the selected weights, return ``summary.json`` entries.

        Args:
            run_dir: the run directory. data: :class:`kdlab.data.Datasets`.
            result: :class:`kdlab.engine.FitResult` (``best_state`` = selected weights).

        Default: a classifier (:func:`kdlab.methods.evaluation.classifier_finalize`).
        """
        from kdlab.methods.evaluation import classifier_finalize

        return classifier_finalize(self, run_dir, data, result, device)

    def summary_extra(self) -> Dict[str, Any]:
        """Method-specific entries for ``summary.json`` (e.g. the teacher's identity)."""
        return {}


def build_network(cfg: Any, spec: Any) -> nn.Module:
    """The run's network from ``cfg.model`` (registry name + kwargs) for the data set ``spec``;
    initialised from ``cfg.model.checkpoint`` when one is given.

    Raises:
        UnknownNameError / TypeError / ValueError: bad model name or kwargs (from ``build_model``).
        ValueError: the checkpoint holds another architecture (names both).
    """
    from kdlab.engine import load_classifier
    from kdlab.models import build_model

    model = build_model(
        cfg.model.name,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        image_size=spec.image_size,
        **dict(cfg.model.kwargs),
    )
    if cfg.model.checkpoint:
        init = load_classifier(cfg.model.checkpoint)
        got = (init.arch, dict(init.arch_kwargs), init.num_classes, init.in_channels, init.image_size)
        want = (model.arch, dict(model.arch_kwargs), model.num_classes, model.in_channels, model.image_size)
        if got != want:
            raise ValueError(
                f"model.checkpoint {cfg.model.checkpoint!r} holds {got} (arch, kwargs, classes, channels, size); "
                f"the config builds {want}"
            )
        model.load_state_dict(init.state_dict())
    return model


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under Fabric's and DDP's wrappers."""
    from lightning_fabric.wrappers import _FabricModule
    from torch.nn.parallel import DistributedDataParallel

    while isinstance(module, (_FabricModule, DistributedDataParallel)):
        module = module.module
    return module
