"""Supervised training of any registry model (the teacher of later distillation runs)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
from torch import nn

from kdlab.losses import cross_entropy
from kdlab.methods.base import METHODS, Method, build_network, unwrap


@METHODS.register("teacher")
class TeacherTraining(Method):
    """Supervised training with cross entropy: ``loss = CE(f(x), y)``.

    The trained network is exported as ``teacher.safetensors`` in the run directory, which a
    distillation config references as ``teacher.checkpoint: runs/<name>``.
    """

    export_name = "teacher"

    @dataclass
    class Config:
        """``loss`` section of a teacher run (cross entropy only)."""

        ce: float = 1.0

    def __init__(self, cfg: Any, spec: Any) -> None:
        super().__init__(cfg, spec)
        self.add_player("model", build_network(cfg, spec))

    def training_step(self, batch, step: int) -> Dict[str, torch.Tensor]:
        x, y = batch
        ce = cross_entropy(self.players["model"](x), y)
        loss = self.cfg.loss.ce * ce
        self.step_optimizer("model", loss)
        return {"loss": loss.detach(), "ce": ce.detach()}

    def eval_model(self) -> nn.Module:
        return unwrap(self.players["model"])
