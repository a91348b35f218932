"""Similarity-preserving knowledge distillation (Tung & Mori, ICCV 2019)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._relational import check_relation_pair, no_relation


def sp_similarity(f: torch.Tensor) -> torch.Tensor:
    """``G = normalize_rows(Q Q^T)`` with ``Q = f.flatten(1)`` [B, C*H*W] (Tung & Mori eqs. 1-2).

    Rows are L2-normalised with the norm floored at 1e-12 (``F.normalize``), so an all-zero
    feature row gives a zero row instead of NaN. Returns [B, B]."""
    q = f.flatten(1)
    return F.normalize(q @ q.t(), p=2.0, dim=1)


def sp_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving loss: ``||G_t - G_s||_F^2 / B^2`` for one (student, teacher) feature pair.

    Source: Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019: ``G~ = Q Q^T``
    of the flattened activations ``Q`` [B, C*H*W] (eq. 1), row-wise L2 normalisation
    ``G[i,:] = G~[i,:] / ||G~[i,:]||_2`` (eq. 2), and ``L_SP = 1/B^2 sum_pairs ||G_t - G_s||_F^2``
    (eq. 3; the sum over layer pairs is the term's). RepDistiller ``Similarity`` and torchdistill
    ``SPKDLoss`` compute the same per pair (RepDistiller's CIFAR-100 script weights it by 3000).

    Conventions: squared Frobenius norm (summed over the B^2 entries) divided by B^2; teacher
    detached; a batch of one example gives 0. Only the B x B matrices are compared, so the
    student and the teacher may have different channel counts and spatial sizes, even different
    ranks ([B, D] vectors against [B, C, H, W] maps).

    Args:
        student: [B, ...] student features (rank >= 2; flattened per example).
        teacher: [B, ...] teacher features.

    Returns:
        Scalar in [0, 4] (rows of G have unit norm, so each row of the difference has norm <= 2);
        0 for identical features.

    Raises:
        ValueError: rank < 2, different batch sizes, non-float tensors (names both shapes).
    """
    dtype = check_relation_pair(student, teacher, vectors=False)
    b = student.shape[0]
    if b < 2:
        return no_relation(student)
    g_s = sp_similarity(student.to(dtype))
    with torch.no_grad():
        g_t = sp_similarity(teacher.detach().to(dtype))
    return (g_t - g_s).pow(2).sum() / (b * b)
