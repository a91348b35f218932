"""Jacobian matching distillation (Srinivas & Fleuret, ICML 2018), the composite loss of section 10.2.

``loss = alpha * CE + beta * match activations + gamma * match Jacobians``
``       + match attention maps (eq. 9) + match attention Jacobians (eq. 10)``

as the terms ``ce`` (alpha), ``logits`` (beta), ``jacobian`` (gamma), ``attention`` and
``attention_jacobian`` of ``objective.student``, which compose with every other term (KD, hints ...). The
paper's defaults: Jacobians of the teacher's top-scoring output (section 4.1, no labels needed),
squared-error form (Prop. 1), softmax temperature 1 for the cross-entropy form (eq. 2): the
``jacobian`` term's own defaults. Every row of Table 1 is a recipe (``jacobian_t1_*``).
``players.input_noise > 0`` trains on ``x + sigma * N(0, I)`` instead (explicit noise augmentation, the
left-hand side of Prop. 1), for comparison with the Jacobian term.

Under train-mode BatchNorm the student's Jacobians are per-sample: those of a second forward pass
with this batch's statistics held constant (:mod:`kdlab.models.batch_stats`), while CE and activation
matching use the ordinary pass; the teacher is always in eval mode (see :mod:`kdlab.losses.jacobian`).
"""
from __future__ import annotations

from kdlab.games.base import METHODS
from kdlab.games.classifier_student import ClassifierStudentMethod


@METHODS.register("jacobian")
class JacobianDistill(ClassifierStudentMethod):
    """Jacobian matching: alpha CE + beta logits + gamma Jacobians (+ attention maps and their Jacobians)."""
