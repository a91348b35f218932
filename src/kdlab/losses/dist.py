"""DIST: relation matching of predictions (Huang, You, Wang, Qian & Xu, NeurIPS 2022)."""
from __future__ import annotations

import torch

from kdlab.losses._common import check_float_tensor, check_logit_pair, check_positive

#: The small constant of the reference code's cosine (DIST_KD, torchdistill ``DISTLoss``): keeps a
#: constant row (zero variance) finite.
PEARSON_EPS = 1e-8


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int = 1, eps: float = PEARSON_EPS) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim``: ``<a - mean a, b - mean b> / (|a - mean a| |b - mean b| + eps)``.

    Invariant to ``a -> c a + d`` with ``c > 0`` (up to the ``eps`` in the denominator); 1 for
    identical non-constant inputs, 0 when one of them is constant.

    Args:
        a, b: float tensors of the same shape, e.g. [B, K]. dim: the dimension correlated over.
        eps: >= 0 added to the product of norms.

    Returns:
        The correlations, ``dim`` removed (e.g. [B] for dim=1 of [B, K]), in [-1, 1].

    Raises:
        ValueError: shapes differ (names both).
    """
    check_float_tensor(a, "a")
    check_float_tensor(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"pearson needs equal shapes; got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim) + eps)


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 1.0, gamma: float = 1.0,
              tau: float = 1.0) -> torch.Tensor:
    """DIST loss: ``tau^2 * (beta * L_inter + gamma * L_intra)``.

    Source: Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022 (sec. 3:
    ``d_p(u, v) = 1 - pearson(u, v)``; inter-class relation ``L_inter`` over each example's class
    probabilities, intra-class relation ``L_intra`` over each class's column of the batch; overall loss
    with weights beta, gamma). With ``P = softmax(Z / tau)`` row-wise, [B, K]:

        L_inter = 1/B sum_i (1 - pearson(P_s[i, :], P_t[i, :]))
        L_intra = 1/K sum_c (1 - pearson(P_s[:, c], P_t[:, c]))

    Conventions: both relations carry the ``tau^2`` factor (as the reference code DIST_KD and
    torchdistill's ``DISTLoss``); Pearson with the reference code's ``eps = 1e-8`` in the denominator
    (:func:`pearson`); teacher logits detached; float32 (float64 for float64 inputs). The intra-class
    term needs B >= 2 to carry information (a single example has constant columns: pearson 0, term 1).
    Defaults beta 1, gamma 1, tau 1: the paper's ImageNet setting; the reference code's CIFAR-100
    setting is beta 2, gamma 2, tau 4. Each term lies in [0, 2]; 0 (up to eps) for equal predictions.

    Args:
        student_logits: [B, K]. teacher_logits: [B, K] (detached inside).
        beta: inter-class weight >= 0. gamma: intra-class weight >= 0. tau: temperature > 0.

    Returns:
        A scalar in [0, 2 * tau^2 * (beta + gamma)].

    Raises:
        ValueError: non-positive tau, negative beta/gamma, logits not float [B, K] of equal shapes.
    """
    for name, v in (("beta", beta), ("gamma", gamma)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    t = check_positive(tau, "tau")
    check_logit_pair(student_logits, teacher_logits)
    dtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    p_s = torch.softmax(student_logits.to(dtype) / t, dim=1)
    p_t = torch.softmax(teacher_logits.detach().to(dtype) / t, dim=1)
    inter = (1 - pearson(p_s, p_t, dim=1)).mean()
    intra = (1 - pearson(p_s, p_t, dim=0)).mean()
    return (t * t) * (beta * inter + gamma * intra)
