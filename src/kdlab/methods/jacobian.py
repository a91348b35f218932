"""Jacobian matching distillation (Srinivas & Fleuret, ICML 2018), the composite loss of section 10.2.

``loss = alpha * CE + beta * match activations + gamma * match Jacobians``
``       + attention * match attention maps (eq. 9) + attention_jacobian * match attention Jacobians (eq. 10)``

This is the ``distill`` game (:class:`kdlab.methods.distill.Distill`, where every term composes
with KD and hints too) with the paper's defaults: Jacobians of the teacher's top-scoring output
(section 4.1, no labels needed), squared-error form (Prop. 1), softmax temperature 1 for the
cross-entropy form (eq. 2). Every row of the paper's Table 1 is a recipe (``kdlab list recipes``:
``jacobian_t1_*``). ``input_noise > 0`` trains on ``x + sigma * N(0, I)`` instead (explicit noise
augmentation, the left-hand side of Prop. 1), for comparison with the Jacobian term.

Under train-mode BatchNorm the student's input Jacobian is the gradient of the batch sum, so it
includes the (small) cross-sample terms through the batch statistics; the teacher is always in
eval mode (see :mod:`kdlab.losses.jacobian`).
"""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.methods.base import METHODS
from kdlab.methods.distill import Distill


@METHODS.register("jacobian")
class JacobianDistill(Distill):
    """Jacobian matching: alpha CE + beta logits + gamma Jacobians (+ attention maps and their Jacobians)."""

    @dataclass
    class Config(Distill.Config):
        """``loss`` section (section 10.2: alpha = ce, beta = logits, gamma = jacobian; 1 or 0 in Table 1)."""

        temperature: float = 1.0  # softmax T of jacobian_loss = ce (eq. 2); also KD's T if kd > 0
