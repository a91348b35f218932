"""Distillation of a classifier student from a frozen teacher with a weighted sum of composable terms.

``loss = sum_i weight_i * term_i``, the terms of ``objective.student`` (``kdlab list terms``): cross entropy,
Hinton KD with temperature (T^2 scaling), logit matching (Ba & Caruana 2014), FitNets hints,
attention transfer, output-Jacobian matching (Srinivas & Fleuret 2018, Prop. 1 / eq. 2) and
attention-map Jacobians (their eq. 10), and any registered term. A weight of 0 skips the term and its
computation; a CE-only objective skips the teacher's forward pass. ``players.input_noise > 0`` trains on
``x + sigma * N(0, I)`` (explicit noise, the left-hand side of Prop. 1).
"""
from __future__ import annotations

from kdlab.games.base import METHODS
from kdlab.games.classifier_student import ClassifierStudentMethod


@METHODS.register("distill")
class Distill(ClassifierStudentMethod):
    """Distillation with composable terms (CE, KD, logits, hints, attention maps, Jacobians, ...)."""
