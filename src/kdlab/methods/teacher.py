"""Supervised training of any registry model (the teacher of later distillation runs)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
from torch import nn

from kdlab.config import bounded
from kdlab.data.batch import Batch
from kdlab.games.base import METHODS, Method, unwrap
from kdlab.games.networks import build_network
from kdlab.ranks import rank_rows
from kdlab.terms.objective import network_outputs


@METHODS.register("teacher")
class TeacherTraining(Method):
    """Supervised training: ``loss`` = the terms of ``objective.teacher`` (default: cross entropy ``ce``).

    ``objective.teacher.jacobian_penalty.weight = lambda > 0`` adds the Jacobian-norm penalty of the
    Jacobian paper (Prop. 2 / eq. 3, term ``jacobian_penalty``), the robust training of its Table 2;
    ``players.input_noise = sigma > 0`` trains on ``x + sigma * N(0, I)`` instead (explicit noise
    augmentation, the left-hand side of Prop. 2). The penalty is on per-sample Jacobians: for a model
    with train-mode BatchNorm, those of a second pass with the batch statistics held constant
    (:mod:`kdlab.models.batch_stats`; one extra forward per step).

    The trained network is exported as ``teacher.safetensors`` in the run directory, which a
    distillation config references as ``teacher.checkpoint: runs/<name>``.

    Raises (at construction): ConfigError: ``objective.teacher`` without a term of weight > 0, or terms
    the method cannot feed (no teacher of its own; labels and input gradients exist).
    """

    role = "teacher"
    export_name = "teacher"
    objectives = {"teacher": "teacher"}
    default_objective = {"teacher": {"ce": {"weight": 1.0}}}
    moved = {"ce": "objective.teacher.ce.weight", "jacobian_penalty": "objective.teacher.jacobian_penalty.weight",
             "jacobian_penalty_form": "objective.teacher.jacobian_penalty.form",
             "jacobian_penalty_select": "objective.teacher.jacobian_penalty.select"}
    synth_unsupported = "it trains on labelled images"

    @dataclass
    class Config:
        """``players`` section of a teacher run."""

        input_noise: float = bounded(0.0, ge=0)  # sigma of explicit Gaussian input noise during training; 0 = off

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        net = build_network(cfg, spec)
        ctx = self.term_context(net, None)
        ctx.role = "teacher"
        self.objective = self.plain_objective(ctx, "teacher", "; set e.g. objective.teacher.ce.weight=1")
        self.add_player("model", net)
        self.input_noise = float(cfg.players.input_noise)  # read once: a config read costs microseconds per step

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        x = batch.x
        if self.input_noise > 0:
            x = x + self.input_noise * rank_rows(lambda n: x.new_empty((n, *x.shape[1:])).normal_(), x.shape[0])
        x = self.objective.prepare_input(x, batch)
        s = network_outputs(self.players["model"], x, self.objective.student_features)
        terms = self.objective(s, None, batch)
        self.step_optimizer("model", terms["loss"])
        return {k: v.detach() for k, v in terms.items()}

    def eval_model(self) -> nn.Module:
        return unwrap(self.players["model"])
