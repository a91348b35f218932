"""Supervised training of any registry model (the teacher of later distillation runs)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
from torch import nn

from kdlab.config import bounded, choice
from kdlab.data.batch import Batch
from kdlab.losses import PENALTY_FORMS, SELECTIONS, cross_entropy, jacobian_norm_penalty
from kdlab.methods.base import METHODS, Method, build_network, unwrap
from kdlab.models.batch_stats import jacobian_forward
from kdlab.terms.base import plain_config


@METHODS.register("teacher")
class TeacherTraining(Method):
    """Supervised training with cross entropy: ``loss = CE(f(x), y) [+ lambda * Jacobian-norm penalty]``.

    ``players.jacobian_penalty = lambda > 0`` adds the Jacobian-norm penalty of the Jacobian paper
    (Prop. 2 / eq. 3, :func:`kdlab.losses.jacobian_norm_penalty`), the robust training of its
    Table 2; ``players.input_noise = sigma > 0`` trains on ``x + sigma * N(0, I)`` instead (explicit
    noise augmentation, the left-hand side of Prop. 2). The penalty is on per-sample Jacobians: for a
    model with train-mode BatchNorm, those of a second pass with the batch statistics held constant
    (:mod:`kdlab.models.batch_stats`; one extra forward per step).

    The trained network is exported as ``teacher.safetensors`` in the run directory, which a
    distillation config references as ``teacher.checkpoint: runs/<name>``.
    """

    role = "teacher"
    export_name = "teacher"

    @dataclass
    class Config:
        """``players`` section of a teacher run (cross entropy only)."""

        ce: float = bounded(1.0, ge=0)
        jacobian_penalty: float = bounded(0.0, ge=0)  # lambda of the Jacobian-norm penalty (Jacobian paper Table 2); 0 = off
        jacobian_penalty_form: str = choice("se", PENALTY_FORMS)  # se: Prop. 2 on logits | ce: eq. 3 (||grad log softmax_y||^2)
        jacobian_penalty_select: str = choice("label", SELECTIONS)  # se form: full | label | top (section 4.1)
        input_noise: float = bounded(0.0, ge=0)  # sigma of explicit Gaussian input noise during training; 0 = off

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        self.add_player("model", build_network(cfg, spec))
        self.loss_cfg = plain_config(cfg.players)  # read in every step: plain attributes, not OmegaConf reads
        self._range_checked = False

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        x, y = batch.x, batch.y
        lc = self.loss_cfg
        if lc.input_noise > 0:
            x = x + lc.input_noise * torch.randn_like(x)
        penalty = lc.jacobian_penalty > 0
        x = x.detach().requires_grad_(penalty)
        model = self.players["model"]
        # with the penalty on, a train-mode BatchNorm model also runs its Jacobian pass (statistics held
        # constant): the penalty is then on per-sample Jacobians; CE stays on the ordinary pass
        logits, per_sample = jacobian_forward(unwrap(model), x, model)
        ce = cross_entropy(logits, y, check_range=not self._range_checked)  # the labels' range once (a host sync)
        self._range_checked = True
        loss = lc.ce * ce
        out = {"ce": ce.detach()}
        if penalty:
            jp = jacobian_norm_penalty(logits if per_sample is None else per_sample, x, y, form=lc.jacobian_penalty_form, select=lc.jacobian_penalty_select)
            loss = loss + lc.jacobian_penalty * jp
            out["jacobian_penalty"] = jp.detach()
        self.step_optimizer("model", loss)
        out["loss"] = loss.detach()
        return out

    def eval_model(self) -> nn.Module:
        return unwrap(self.players["model"])
