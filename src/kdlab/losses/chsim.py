"""Inter-channel correlation (ICKD, Liu et al., ICCV 2021) as torchdistill's ``ChSimLoss``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_feature_pair, check_mode
from kdlab.losses.gcc import gram_matrix

#: divisor of the summed squared difference: ``torchdistill`` = C * B^2 (``ChSimLoss.batch_loss``),
#: ``ickd`` = C * B (the authors' ``ICKDLoss.batch_loss``)
CHSIM_NORMS = ("torchdistill", "ickd")


def channel_correlation(f: torch.Tensor) -> torch.Tensor:
    """``normalize_rows(F F^T)`` per example with ``F`` = the map flattened to [C, H*W]: [B, C, C].

    Rows L2-normalised with the norm floored at 1e-12 (``F.normalize``): a dead channel gives a zero row."""
    return F.normalize(gram_matrix(f, normalize="none"), p=2.0, dim=2)


def chsim_loss(student: torch.Tensor, teacher: torch.Tensor, norm: str = "torchdistill") -> torch.Tensor:
    """Channel similarity: ``sum_{b,i,j} (G_s - G_t)_{bij}^2 / divisor``, ``G = channel_correlation``.

    Source: Liu et al., "Exploring Inter-Channel Correlation for Diversity-Preserved Knowledge Distillation",
    ICCV 2021 (the inter-channel correlation matrix of a feature map, matched between student and teacher);
    code: torchdistill ``torchdistill/losses/mid_level.py``, ``ChSimLoss.batch_loss`` (divisor ``C * B * B``,
    ``norm='torchdistill'``), refactored from ADLab-AutoDrive/ICKD ``Cifar100/distiller_zoo/ICKD.py``
    ``ICKDLoss.batch_loss`` (divisor ``C * B``, ``norm='ickd'``). Both codes first pass the student map
    through an embedding (1x1 conv + BN) to the teacher's channel count: that is the term's, not this loss's.

    Args:
        student, teacher: [B, C, H, W] maps of one shape (or [B, C, N]; flattened after the channel axis).
        norm: one of :data:`CHSIM_NORMS`.

    Returns:
        Scalar >= 0; 0 when the two maps have the same row-normalised channel Gram matrices
        (e.g. ``student = a * teacher`` for any a > 0). Teacher detached.

    Raises:
        ValueError: shapes differ or rank < 3 (names both shapes), unknown ``norm``.
    """
    check_mode(norm, CHSIM_NORMS, "norm")
    check_feature_pair(student, teacher, "feature maps")
    if student.dim() < 3:
        raise ValueError(f"channel similarity needs maps [B, C, ...]; got {tuple(student.shape)}")
    b, c = student.shape[0], student.shape[1]
    diff = channel_correlation(student) - channel_correlation(teacher.detach())
    return diff.pow(2).sum() / (c * b * b if norm == "torchdistill" else c * b)
