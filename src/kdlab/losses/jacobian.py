"""Jacobian matching and Jacobian-norm penalties (Srinivas & Fleuret, ICML 2018, "Knowledge Transfer
with Jacobian Matching").

Everything here works on tensors that carry an autograd graph back to one input leaf ``x``
(``x.requires_grad_(True)`` before the forward passes); the only functions that call networks are
:func:`output_jacobian_loss` (and, in :mod:`kdlab.losses.jacobian_noise`, the Prop. 1 checks), which
take callables. Attention-map Jacobians (eq. 10) are in :mod:`kdlab.losses.attention_jacobian`.

Conventions (stated once, used by every function):

* ``x`` is ``[B, C, H, W]`` (or ``[B, D]``); a per-sample input gradient is flattened to ``[D]``.
* The input gradient of sample ``b`` is taken as ``d/dx_b sum_b' f(x_b')``, i.e. one backward pass
  of the batch sum. This is the per-sample Jacobian ``d f(x_b) / d x_b`` only when no sample's output
  depends on another's input. A network with train-mode BatchNorm breaks that: the batch sum's
  gradient adds ``B - 1`` cross terms through the batch statistics, each O(1/B), O(1) together
  (median relative error 0.66 at B = 16 and 0.68 at B = 128 on VGG-4, issue 10). So the outputs
  given to these functions must come from a pass whose samples do not interact: for the student,
  :func:`kdlab.models.batch_stats.jacobian_forward`'s second pass, which holds this batch's
  statistics constant (the per-sample Jacobian of the network as it acts on sample ``b`` given this
  batch; :class:`kdlab.terms.Outputs` ``.for_jacobian``); for the frozen teacher, its eval-mode
  pass (running statistics). Teacher and student Jacobians are then the same kind of object, the
  Jacobian of a per-sample function; they coincide for a train-mode student whose running
  statistics equal the batch's. :func:`output_jacobian_loss` does this itself for ``nn.Module``s.
* The student's gradient is built with ``create_graph=True`` (double backprop: the loss is
  differentiable w.r.t. the student's parameters); the teacher's with ``create_graph=False`` and
  detached (no gradient ever reaches the teacher).
* Reductions: sum over outputs and input dimensions, mean over the batch (as Prop. 1 is written
  per data point).
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.losses._common import check_float_tensor, check_mode
from kdlab.models.batch_stats import jacobian_forward

SELECTIONS = ("full", "label", "top")
"""Output selection of section 4.1: all k outputs, the ground-truth class c, the teacher's top class."""
JACOBIAN_LOSSES = ("se", "ce")
"""Squared-error form (Prop. 1) or cross-entropy form (eq. 2) of the output-Jacobian term."""
PENALTY_FORMS = ("se", "ce")
"""Jacobian-norm penalty: squared-error form (Prop. 2) or cross-entropy form (eq. 3)."""
_EPS = 1e-12


def check_sigma(sigma: float, name: str = "sigma") -> float:
    """Return ``sigma`` as a float if it is a finite number >= 0; else ValueError naming it."""
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not math.isfinite(float(sigma)):
        raise ValueError(f"{name} must be a finite number >= 0, got {sigma!r}")
    if float(sigma) < 0:
        raise ValueError(f"{name} must be >= 0 (a noise standard deviation), got {sigma!r}")
    return float(sigma)


def check_input_leaf(x: torch.Tensor) -> None:
    check_float_tensor(x, "x")
    if not x.requires_grad:
        raise ValueError(
            "x must require grad and be the input of the forward pass whose Jacobian is taken "
            "(call x.requires_grad_(True) before the forward)"
        )


def select_classes(
    mode: str,
    num_classes: int,
    labels: Optional[torch.Tensor] = None,
    teacher_logits: Optional[torch.Tensor] = None,
) -> Optional[torch.Tensor]:
    """The output index per sample whose Jacobian is matched (section 4.1).

    * ``'full'``: all ``k`` outputs -> returns ``None``.
    * ``'label'``: the ground-truth class ``c`` (the case of eq. 3) -> ``labels``.
    * ``'top'``: the teacher's largest output, no labels needed -> ``teacher_logits.argmax(1)``
      (ties: lowest index).

    Raises:
        ValueError: unknown mode (lists full, label, top), or the tensor the mode needs is missing,
            or labels outside ``[0, num_classes)``.
    """
    check_mode(mode, SELECTIONS, "Jacobian output selection")
    if mode == "full":
        return None
    if mode == "label":
        if labels is None:
            raise ValueError("selection 'label' needs the ground-truth labels [B]")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}); got {int(labels.min())}..{int(labels.max())}")
        return labels.long()
    if teacher_logits is None:
        raise ValueError("selection 'top' needs the teacher's logits [B, K]")
    return teacher_logits.detach().argmax(dim=1)


def input_gradients(
    outputs: torch.Tensor,
    x: torch.Tensor,
    classes: Optional[torch.Tensor] = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """Input gradients of selected outputs: ``J[b, i, :] = d outputs[b, c_i] / d x_b`` flattened.

    Args:
        outputs: ``[B, K]`` computed from ``x`` (logits, or softmax probabilities).
        x: the input leaf, ``[B, ...]`` with ``requires_grad``.
        classes: ``None`` for all K outputs (K backward passes), or ``[B]`` indices (one pass).
        create_graph: True for the student (double backprop); False for the teacher (the result
            is then detached).

    Returns:
        ``[B, m, D]`` with ``m = K`` (full) or 1, ``D = x[0].numel()``: per-sample Jacobian rows when
        ``outputs[b]`` depends on ``x_b`` alone (module docstring: pass a Jacobian pass's outputs for
        a train-mode BatchNorm network).

    Raises:
        ValueError: ``x`` does not require grad; outputs not ``[B, K]``; batch sizes differ.
    """
    check_input_leaf(x)
    check_float_tensor(outputs, "outputs")
    if outputs.dim() != 2 or outputs.shape[0] != x.shape[0]:
        raise ValueError(f"outputs must be [B, K] with B = {x.shape[0]}, got {tuple(outputs.shape)}")
    if classes is None:
        cols = [outputs[:, k].sum() for k in range(outputs.shape[1])]
    else:
        cols = [outputs.gather(1, classes.view(-1, 1).to(outputs.device)).sum()]
    grads = []
    for j, s in enumerate(cols):
        (g,) = torch.autograd.grad(s, x, create_graph=create_graph, retain_graph=True)
        grads.append(g.flatten(1))
    out = torch.stack(grads, dim=1)
    return out if create_graph else out.detach()


def unit_rows(j: torch.Tensor) -> torch.Tensor:
    return j / j.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def jacobian_matching(
    student_jac: torch.Tensor, teacher_jac: torch.Tensor, normalize: bool = False
) -> torch.Tensor:
    """Squared-error Jacobian matching, the sigma^2 term of Prop. 1.

    ``(1/B) sum_b sum_i || grad_x T^i(x_b) - grad_x S^i(x_b) ||_2^2`` over the selected outputs i.
    With ``normalize=True`` every Jacobian row is first scaled to unit L2 norm (eq. 10's
    normalisation; also what the common public implementation does, NOTES.md), giving a
    scale-invariant loss in ``[0, 4]`` per output.

    Args:
        student_jac, teacher_jac: ``[B, m, D]`` from :func:`input_gradients` (teacher detached here).
        normalize: unit-normalise each ``[D]`` row first.

    Returns:
        scalar >= 0 (squared logit units per squared input unit; dimensionless if normalised).

    Raises:
        ValueError: shapes differ (names both).
    """
    check_float_tensor(student_jac, "student_jac")
    check_float_tensor(teacher_jac, "teacher_jac")
    if student_jac.shape != teacher_jac.shape or student_jac.dim() != 3:
        raise ValueError(
            f"student and teacher Jacobians must both be [B, m, D]; got {tuple(student_jac.shape)} "
            f"and {tuple(teacher_jac.shape)}"
        )
    s, t = student_jac, teacher_jac.detach().to(student_jac.dtype)
    if normalize:
        s, t = unit_rows(s), unit_rows(t)
    return (s - t).pow(2).sum(dim=(1, 2)).mean()


def jacobian_cross_entropy(
    student_prob_jac: torch.Tensor, teacher_prob_jac: torch.Tensor, student_probs: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy form of Jacobian matching, the sigma^2 term of eq. 2.

    ``-(1/B) sum_b sum_i grad_x T_s^i(x_b) . grad_x S_s^i(x_b) / S_s^i(x_b)`` where ``T_s, S_s`` are
    the softmax outputs (with temperature, applied by the caller) and ``i`` runs over the selected
    outputs. It is not bounded below (the paper calls it unstable, section 4); it is offered for
    completeness and for the noise-equivalence check, the squared-error form is the default.

    Args:
        student_prob_jac, teacher_prob_jac: ``[B, m, D]`` gradients of softmax outputs.
        student_probs: ``[B, m]`` the selected student softmax outputs ``S_s^i(x_b)``.

    Returns:
        scalar (may be negative).

    Raises:
        ValueError: shapes disagree.
    """
    if student_prob_jac.shape != teacher_prob_jac.shape or student_probs.shape != student_prob_jac.shape[:2]:
        raise ValueError(
            f"shapes disagree: student_prob_jac {tuple(student_prob_jac.shape)}, teacher_prob_jac "
            f"{tuple(teacher_prob_jac.shape)}, student_probs {tuple(student_probs.shape)} (want [B, m, D], [B, m, D], [B, m])"
        )
    dots = (student_prob_jac * teacher_prob_jac.detach().to(student_prob_jac.dtype)).sum(dim=2)
    return -(dots / student_probs.clamp_min(_EPS)).sum(dim=1).mean()


def _jacobian_outputs(logits: torch.Tensor, loss: str, temperature: float) -> torch.Tensor:
    """What is differentiated: logits (``'se'``, Prop. 1) or ``softmax(logits / temperature)`` (``'ce'``, eq. 2)."""
    return logits if loss == "se" else F.softmax(logits / temperature, 1)


def teacher_output_jacobian(
    teacher_logits: torch.Tensor,
    x: torch.Tensor,
    classes: Optional[torch.Tensor],
    loss: str = "se",
    temperature: float = 1.0,
) -> torch.Tensor:
    """The teacher's half of :func:`output_jacobian_term`: input gradients ``[B, m, D]`` (no graph) of
    the selected outputs (``classes`` from :func:`select_classes`) of logits (``loss='se'``) or of
    ``softmax(logits / temperature)`` (``loss='ce'``). A per-example function of the frozen teacher,
    so it can be computed once per example and cached."""
    return input_gradients(_jacobian_outputs(teacher_logits, loss, temperature), x, classes, create_graph=False)


def student_jacobian_match(
    student_logits: torch.Tensor,
    teacher_jac: torch.Tensor,
    x: torch.Tensor,
    classes: Optional[torch.Tensor],
    loss: str = "se",
    temperature: float = 1.0,
    normalize: bool = False,
) -> torch.Tensor:
    """The student's half of :func:`output_jacobian_term`: its input gradients of the same selected
    outputs (``create_graph=True``) matched to ``teacher_jac`` [B, m, D] by :func:`jacobian_matching`
    (``'se'``, Prop. 1) or :func:`jacobian_cross_entropy` (``'ce'``, eq. 2)."""
    s_out = _jacobian_outputs(student_logits, loss, temperature)
    s_jac = input_gradients(s_out, x, classes, create_graph=True)
    if loss == "se":
        return jacobian_matching(s_jac, teacher_jac, normalize=normalize)
    probs = s_out if classes is None else s_out.gather(1, classes.view(-1, 1))
    return jacobian_cross_entropy(s_jac, teacher_jac, probs)


def check_jacobian_options(select: str, loss: str, temperature: float) -> None:
    """Raises ValueError for a bad ``select`` (lists full, label, top), ``loss`` (lists se, ce) or a
    temperature <= 0."""
    check_mode(select, SELECTIONS, "Jacobian output selection")
    check_mode(loss, JACOBIAN_LOSSES, "Jacobian loss")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def output_jacobian_term(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    x: torch.Tensor,
    select: str = "top",
    labels: Optional[torch.Tensor] = None,
    loss: str = "se",
    temperature: float = 1.0,
    normalize: bool = False,
) -> torch.Tensor:
    """Output-Jacobian matching term from logits that both carry a graph to the input leaf ``x``.

    Selects the outputs (:func:`select_classes`), takes the teacher's input gradients without a
    graph (:func:`teacher_output_jacobian`) and the student's with ``create_graph=True``
    (:func:`student_jacobian_match`), then:

    * ``loss='se'``: :func:`jacobian_matching` on logits (Prop. 1; the paper's choice, sec. 6.1).
    * ``loss='ce'``: :func:`jacobian_cross_entropy` on ``softmax(logits / temperature)`` (eq. 2).

    Cost: one extra backward pass per selected output for each network (k for ``'full'``).

    Raises:
        ValueError: bad ``select`` (lists full, label, top) or ``loss`` (lists se, ce), a
            temperature <= 0, logits of different shapes, ``x`` without grad.
    """
    check_jacobian_options(select, loss, temperature)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ"
        )
    classes = select_classes(select, student_logits.shape[1], labels, teacher_logits)
    t_jac = teacher_output_jacobian(teacher_logits, x, classes, loss, temperature)
    return student_jacobian_match(student_logits, t_jac, x, classes, loss, temperature, normalize)


def output_jacobian_loss(
    student: Callable[[torch.Tensor], torch.Tensor],
    teacher: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    select: str = "top",
    labels: Optional[torch.Tensor] = None,
    loss: str = "se",
    temperature: float = 1.0,
    normalize: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`output_jacobian_term` from one forward pass of each network on a leaf copy of ``x``.

    A network given as an ``nn.Module`` with batch-coupled layers (train-mode BatchNorm) is run by
    :func:`kdlab.models.batch_stats.jacobian_forward`: its Jacobian is taken on the second pass, with
    this batch's statistics held constant (module docstring); plain callables are run once.

    Returns:
        ``(jacobian term, student_logits [B, K] with graph, teacher_logits [B, K] detached)`` of the
        ordinary forward pass, so the caller can add CE and activation matching on it.
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        t_logits, t_jac = _forward(teacher, xg)
        s_logits, s_jac = _forward(student, xg)
        term = output_jacobian_term(s_jac, t_jac, xg, select, labels, loss, temperature, normalize)
    return term, s_logits, t_logits.detach()


def _forward(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(ordinary outputs, outputs whose input gradients are per-sample) of ``net`` on the leaf ``x``."""
    if not isinstance(net, nn.Module):
        out = net(x)
        return out, out
    main, per = jacobian_forward(net, x)
    return main, (main if per is None else per)


def jacobian_norm_penalty(
    logits: torch.Tensor,
    x: torch.Tensor,
    labels: Optional[torch.Tensor] = None,
    form: str = "se",
    select: str = "label",
) -> torch.Tensor:
    """Jacobian-norm penalty for robust supervised training (Prop. 2 and eq. 3).

    * ``form='se'`` (Prop. 2): ``(1/B) sum_b sum_i ||grad_x S^i(x_b)||^2`` over the selected logits
      i (``select='full'``: all k; ``'label'``: the ground-truth class, section 4.1's heuristic and
      the default; ``'top'``: the model's own top class).
    * ``form='ce'`` (eq. 3 with one-hot y): ``(1/B) sum_b ||grad_x S_s^c(x_b)||^2 / S_s^c(x_b)^2
      = (1/B) sum_b ||grad_x log softmax(S(x_b))_c||^2`` for the label c (``select`` ignored: the
      one-hot y keeps only that term).

    The gradient is built with ``create_graph=True``; the caller multiplies by lambda (= sigma^2).
    For a network with train-mode BatchNorm pass the logits of its Jacobian pass
    (:func:`kdlab.models.batch_stats.jacobian_forward`), so the penalty is on per-sample Jacobians.

    Raises:
        ValueError: unknown ``form`` (lists se, ce) or ``select``; missing labels where needed.
    """
    check_mode(form, PENALTY_FORMS, "Jacobian penalty form")
    check_mode(select, SELECTIONS, "Jacobian output selection")
    if form == "ce":
        if labels is None:
            raise ValueError("the cross-entropy penalty (eq. 3) needs the labels")
        out = F.log_softmax(logits, dim=1)
        classes = labels.long()
    else:
        out = logits
        classes = select_classes(select, logits.shape[1], labels, logits)
    jac = input_gradients(out, x, classes, create_graph=True)
    return jac.pow(2).sum(dim=(1, 2)).mean()


__all__ = [
    "SELECTIONS",
    "JACOBIAN_LOSSES",
    "PENALTY_FORMS",
    "check_sigma",
    "select_classes",
    "input_gradients",
    "jacobian_matching",
    "jacobian_cross_entropy",
    "output_jacobian_term",
    "teacher_output_jacobian",
    "student_jacobian_match",
    "check_jacobian_options",
    "output_jacobian_loss",
    "jacobian_norm_penalty",
]
