"""CAT's kernel alignment (Jin et al. 2021, "Teachers do more than teach"; VEM paper appendix A.2.4,
eqs. 22-23).

``L_algo = L_GAN + lambda_recon L_recon + lambda_KA L_KA`` (eq. 22); ``L_recon`` is
:func:`kdlab.losses.image.l1_reconstruction`; ``L_KA`` (eq. 23) is minus the kernel alignment of student
and teacher maps summed over layers.
"""
from __future__ import annotations

from typing import Sequence

import torch

from kdlab.losses._common import check_float_tensor, check_positive, sum_over_layers

KA_EPS = 1e-12


def kernel_alignment(student: torch.Tensor, teacher: torch.Tensor, center: bool = False,
                     eps: float = KA_EPS) -> torch.Tensor:
    """``KA(S, T) = ||rho(S)^T rho(T)||_F^2 / (||rho(S)^T rho(S)||_F ||rho(T)^T rho(T)||_F)`` (eq. 23's ratio).

    ``rho`` reshapes [n, c, h, w] into [n, c*h*w] (the batch is the n of the equation, so the ratio is one
    number per batch, its expectation the mean over batches). Computed through the n x n kernels
    ``K = rho rho^T``, since ``||A^T B||_F^2 = <A A^T, B B^T>_F`` and ``||A^T A||_F = ||A A^T||_F``: cost
    O(n^2 chw) and the two sides may have different c, h, w. In [0, 1]; 1 for equal inputs; invariant to
    an orthogonal transform of either side's c*h*w features and to scaling either side by a non-zero
    number. Eq. 23 does not centre the features (``center=False``, default); ``center=True`` subtracts the
    batch mean first, giving linear CKA (Kornblith et al. 2019).

    Args:
        student: [n, ...] (n >= 1). teacher: [n, ...], the same n.
        center: subtract each side's batch mean first. eps: > 0, added to the denominator.

    Returns:
        Scalar in [0, 1] (computed in float32, or float64 for float64 input).

    Raises:
        ValueError: different batch sizes or a tensor without a batch dimension (names both shapes).
    """
    check_float_tensor(student, "student feature")
    check_float_tensor(teacher, "teacher feature")
    eps = check_positive(eps, "eps")
    if student.dim() < 2 or teacher.dim() < 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError("kernel alignment needs features [n, ...] with the same n; got student "
                         f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}")
    dtype = torch.float64 if torch.float64 in (student.dtype, teacher.dtype) else torch.float32
    s, t = student.flatten(1).to(dtype), teacher.detach().flatten(1).to(dtype)
    if center:
        s, t = s - s.mean(0, keepdim=True), t - t.mean(0, keepdim=True)
    k_s, k_t = s @ s.t(), t @ t.t()
    return (k_s * k_t).sum() / (torch.linalg.matrix_norm(k_s) * torch.linalg.matrix_norm(k_t) + eps)


def kernel_alignment_loss(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor],
                          center: bool = False, eps: float = KA_EPS) -> torch.Tensor:
    """``L_KA = -sum_l KA(G_l^s(x), G_l^t(x))`` (eq. 23): in [-L, 0], -L when every layer aligns perfectly.

    No adapters: the alignment compares n x n kernels, so the student's maps may be narrower.

    Raises:
        ValueError: lists of different or zero length, or a pair with different batch sizes (names the
            layer and both shapes).
    """
    return sum_over_layers(students, teachers, lambda s, t: -kernel_alignment(s, t, center, eps))
