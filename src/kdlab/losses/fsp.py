"""Flow of solution procedure (Yim et al. 2017, "A gift from knowledge distillation", eqs. 1-2)."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_float_tensor


def _check_map(x: torch.Tensor, name: str) -> None:
    check_float_tensor(x, name)
    if x.dim() != 4:
        raise ValueError(f"{name} must be a feature map [B, C, H, W], got shape {tuple(x.shape)}")


def common_size(first: torch.Tensor, second: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both maps at the spatial size ``(min(H1, H2), min(W1, W2))``: the larger one is adaptive-average
    pooled down (RepDistiller's FSP pools whichever map of the pair is larger; equal maps are unchanged)."""
    size = (min(first.shape[2], second.shape[2]), min(first.shape[3], second.shape[3]))
    pool = lambda x: x if tuple(x.shape[2:]) == size else F.adaptive_avg_pool2d(x, size)  # noqa: E731
    return pool(first), pool(second)


def fsp_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The FSP matrix of two maps of one network (Yim et al. 2017, eq. 1).

    ``G_{ij} = sum_{h,w} F1_i(h, w) F2_j(h, w) / (h w)``, i.e. the Gram matrix between the channels of the
    two maps averaged over spatial positions. When the sizes differ, the larger map is first adaptive-average
    pooled to the smaller one's ``H x W`` (see :func:`common_size`; the paper pairs maps of equal size).
    Computed in float32 (float64 for float64 input).

    Args:
        first: [B, C1, H1, W1].
        second: [B, C2, H2, W2], same B.

    Returns:
        [B, C1, C2].

    Raises:
        ValueError: a map that is not a float 4-D tensor, or different batch sizes (names both shapes).
    """
    _check_map(first, "first")
    _check_map(second, "second")
    if first.shape[0] != second.shape[0]:
        raise ValueError(f"batch sizes differ: first {tuple(first.shape)} and second {tuple(second.shape)}")
    dtype = torch.float64 if first.dtype == torch.float64 or second.dtype == torch.float64 else torch.float32
    a, b = common_size(first.to(dtype), second.to(dtype))
    a, b = a.flatten(2), b.flatten(2)
    return torch.bmm(a, b.transpose(1, 2)) / a.shape[2]


def fsp_loss(student_first: torch.Tensor, student_second: torch.Tensor,
             teacher_first: torch.Tensor, teacher_second: torch.Tensor) -> torch.Tensor:
    """FSP loss for one pair of layers: ``mean_b ||G_s(b) - G_t(b)||_F^2`` (Yim et al. 2017, eq. 2).

    ``G_s = fsp_matrix(student_first, student_second)`` and ``G_t`` likewise for the teacher (eq. 1). The
    paper's eq. 2 is ``L = 1/N sum_x sum_i lambda_i ||G_i^T(x) - G_i^S(x)||_2^2`` with N examples, the
    squared norm summed over the ``C1 x C2`` entries and equal lambda_i for all pairs: here the entries are
    summed and the batch averaged (the 1/N), one pair per call; lambda is the term's weight (sum the calls
    over pairs). RepDistiller's FSP instead averages over the entries too (``.pow(2).mean()``), i.e. this
    value divided by ``C1 * C2``. The teacher maps are detached.

    Args:
        student_first: [B, C1, H1, W1]; student_second: [B, C2, H2, W2].
        teacher_first: [B, C1, H1', W1']; teacher_second: [B, C2, H2', W2'] (same C1, C2: the FSP
            matrices must have the same size; the spatial sizes may differ from the student's).

    Returns:
        Scalar >= 0 (units of the features' product squared); 0 when the FSP matrices are equal.

    Raises:
        ValueError: maps that are not float 4-D tensors, different batch sizes, or FSP matrices of
            different sizes (names all four shapes).
    """
    g_s = fsp_matrix(student_first, student_second)
    g_t = fsp_matrix(teacher_first.detach(), teacher_second.detach())
    if g_s.shape != g_t.shape:
        raise ValueError(
            "FSP matrices differ in size: student "
            f"{tuple(g_s.shape[1:])} from {tuple(student_first.shape)} x {tuple(student_second.shape)}, teacher "
            f"{tuple(g_t.shape[1:])} from {tuple(teacher_first.shape)} x {tuple(teacher_second.shape)}")
    return (g_s - g_t.to(g_s.dtype)).pow(2).sum(dim=(1, 2)).mean()
