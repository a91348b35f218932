"""Correlation congruence (Peng et al., ICCV 2019)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_mode, check_positive
from kdlab.losses._relational import check_relation_pair, no_relation

CC_KERNELS = ("bilinear", "gaussian")
#: Gaussian kernel defaults of the public CCKD code (Knowledge-Distillation-Zoo ``CC``: gamma 0.4,
#: P_order 2; torchdistill's ``CCKDLoss`` example: gamma 0.4, max_p 2).
CC_GAMMA = 0.4
CC_ORDER = 2


def cc_correlation(z: torch.Tensor, kernel: str = "gaussian", gamma: float = CC_GAMMA,
                   order: int = CC_ORDER) -> torch.Tensor:
    """The B x B correlation matrix ``C_ij = k(z_i, z_j)`` of L2-normalised embeddings.

    * ``bilinear``: ``k(a, b) = a^T b`` (cosine similarity of the normalised embeddings);
    * ``gaussian``: ``exp(-gamma ||a - b||^2) = exp(-2 gamma) exp(2 gamma a^T b)`` for unit
      vectors, approximated by its Taylor expansion of order P:
      ``k(a, b) ~= sum_{p=0}^{P} exp(-2 gamma) (2 gamma)^p / p! (a^T b)^p``.

    Embeddings are L2-normalised per row first (norm floored at 1e-12): the expansion needs unit
    vectors, and both kernels then compare directions only, whatever the two networks' scales.

    Args:
        z: [B, D]. kernel: one of :data:`CC_KERNELS`. gamma: > 0. order: P >= 1 (an int).

    Returns:
        [B, B] symmetric matrix.
    """
    zn = F.normalize(z, p=2.0, dim=1)
    cos = zn @ zn.t()
    if kernel == "bilinear":
        return cos
    # Horner's scheme: sum_p c_p cos^p with c_p = (2 gamma)^p / p!
    coef = [(2.0 * gamma) ** p / math.factorial(p) for p in range(order + 1)]
    out = torch.full_like(cos, coef[-1])
    for c in reversed(coef[:-1]):
        out = out * cos + c
    return math.exp(-2.0 * gamma) * out


def _check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an int >= 1 (the Taylor expansion's P), got {order!r}")
    return order


def cc_loss(student: torch.Tensor, teacher: torch.Tensor, kernel: str = "gaussian", gamma: float = CC_GAMMA,
            order: int = CC_ORDER, detach_teacher: bool = True) -> torch.Tensor:
    """Correlation congruence: ``||C_s - C_t||_F^2 / B^2`` between the batch correlation matrices.

    Source: Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019, section 3:
    ``L_CC = 1/n^2 ||psi(F_t) - psi(F_s)||_2^2`` with ``psi(F) = [k(F_i, F_j)]`` the n x n
    correlation matrix of a batch, and the kernel ``k`` either bilinear pooling or the Gaussian RBF
    approximated by its P-order Taylor expansion (:func:`cc_correlation`).

    Conventions: squared Frobenius norm over the B^2 entries divided by B^2 (= the mean squared
    entry difference, as Knowledge-Distillation-Zoo's ``F.mse_loss``); embeddings L2-normalised
    before either kernel; defaults ``gamma = 0.4``, ``order = 2`` from the public code (see
    :data:`CC_GAMMA`); RepDistiller's ``Correlation`` is a different, undocumented formula and is
    not followed. The teacher is detached unless ``detach_teacher=False`` (used when a trainable
    head sits on the detached teacher feature, as RepDistiller's and torchdistill's CCKD embed both
    sides). A batch of one example gives 0. Student and teacher widths may differ.

    Args:
        student: [B, D_s] embeddings (maps: ``kdlab.losses.adapters.to_vector`` first).
        teacher: [B, D_t] embeddings.
        kernel: ``'gaussian'`` (default) or ``'bilinear'``. gamma: > 0. order: P >= 1.
        detach_teacher: detach ``teacher`` inside (default True).

    Returns:
        Scalar >= 0; 0 for identical embeddings (and for embeddings equal up to positive per-row
        scaling).

    Raises:
        ValueError: unknown kernel (lists accepted), bad gamma or order, embeddings not [B, D],
            different batch sizes, non-float tensors.
    """
    check_mode(kernel, CC_KERNELS, "kernel")
    gamma = check_positive(gamma, "gamma")
    order = _check_order(order)
    dtype = check_relation_pair(student, teacher, vectors=True)
    b = student.shape[0]
    if b < 2:
        return no_relation(student)
    c_s = cc_correlation(student.to(dtype), kernel, gamma, order)
    t = teacher.detach() if detach_teacher else teacher
    c_t = cc_correlation(t.to(dtype), kernel, gamma, order)
    return (c_s - c_t).pow(2).sum() / (b * b)
