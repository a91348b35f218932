"""Activation-boundary transfer (Heo et al. 2019, "Knowledge transfer via distillation of activation
boundaries formed by hidden neurons", eq. 6: the alternative loss with margin)."""
from __future__ import annotations

import torch

from kdlab.losses._common import check_feature_pair, check_mode, check_positive

AB_REDUCTIONS = ("mean", "batchmean")


def ab_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor, margin: float = 1.0,
            reduction: str = "mean") -> torch.Tensor:
    """Activation-boundary loss between a connected student response and the teacher's pre-activation.

    Heo et al. 2019, eq. 6 (the differentiable alternative of the activation-transfer loss, with margin
    m): with ``r = r(S(I))`` the student's response after the connector r (1x1 conv + BN, applied by the
    caller, e.g. :class:`kdlab.losses.adapters.ConvRegressor`) and ``t = T(I)`` the teacher's, per neuron

    ``l = (r + m)^2 * 1[r > -m and t <= 0] + (r - m)^2 * 1[r <= m and t > 0]``

    i.e. ``||rho(t) * ReLU(m - r) + (1 - rho(t)) * ReLU(m + r)||_2^2`` with ``rho(t) = 1[t > 0]``: the
    student is pushed to the teacher's side of every activation boundary, at least m beyond it. Only the
    sign of t matters. The paper takes t and r BEFORE the ReLU; a post-ReLU teacher feature has the same
    signs (0 exactly where the pre-activation was <= 0), but a feature that is positive almost everywhere
    (after sigmoid, softplus, average pooling of a ReLU ...) has ``t <= 0`` nowhere but at exact zeros,
    and the loss then only pushes r above m everywhere. Reductions: ``mean`` (default): averaged over all
    B * C * H * W neurons; ``batchmean``: summed over neurons and averaged over the batch (the paper's
    per-image squared norm). RepDistiller sums, divides by the batch size and by 1000/3 and weights its
    layers 2^(i - n + 1): its value is ``batchmean * 3 / 1000`` per layer (scales a term weight absorbs).
    The teacher is detached; the indicators carry no gradient.

    Args:
        student_feature: [B, ...] connector output (any rank >= 2, e.g. [B, C, H, W] or [B, D]).
        teacher_feature: same shape; detached inside.
        margin: m > 0 (default 1.0: the paper's and RepDistiller's).
        reduction: ``'mean'`` or ``'batchmean'``.

    Returns:
        Scalar >= 0; 0 when every ``r`` lies at least m on the teacher's side (``r >= m`` where t > 0,
        ``r <= -m`` where t <= 0).

    Raises:
        ValueError: ``margin`` not a finite number > 0, unknown ``reduction``, non-float tensors, rank < 2,
            or different shapes (names both).
    """
    m = check_positive(margin, "margin")
    check_mode(reduction, AB_REDUCTIONS, "reduction")
    check_feature_pair(student_feature, teacher_feature, "features (after the connector)")
    dtype = torch.float64 if student_feature.dtype == torch.float64 else torch.float32
    r = student_feature.to(dtype)
    on = teacher_feature.detach() > 0
    loss = (r + m).pow(2) * ((r > -m) & ~on).to(dtype) + (r - m).pow(2) * ((r <= m) & on).to(dtype)
    if reduction == "mean":
        return loss.mean()
    return loss.flatten(1).sum(1).mean()
