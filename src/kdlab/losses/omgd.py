"""OMGD's channel distillation (Ren et al. 2021; VEM paper appendix A.2.1, eqs. 13-14).

The other OMGD terms (eqs. 12, 15) are image distances of :mod:`kdlab.losses.image`: ``ssim_loss``,
``perceptual_loss``, ``l1_reconstruction`` and ``total_variation``. The 1x1 convolutions ``f_l`` of eq. 13
are :class:`kdlab.losses.gan_compression_distill.Conv1x1Adapters`; the functions here take the student
features after them.
"""
from __future__ import annotations

from typing import Sequence

import torch

from kdlab.losses._common import check_float_tensor, sum_over_layers


def channel_attention(x: torch.Tensor) -> torch.Tensor:
    """``GAP(x)``: a feature map [B, C, H, W] averaged over its spatial positions -> [B, C] (eq. 14)."""
    check_float_tensor(x, "x")
    if x.dim() != 4:
        raise ValueError(f"channel_attention expects a feature map [B, C, H, W], got shape {tuple(x.shape)}")
    return x.mean(dim=(2, 3))


def channel_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """One layer of eq. 13: ``E_x L_atten(G_l^t(x), f_l(G_l^s(x)))`` with eq. 14
    ``L_atten(p, q) = (1/C) ||GAP(p) - GAP(q)||_2^2``.

    ``GAP`` averages over H x W (:func:`channel_attention`); the squared distance of the two C-vectors is
    divided by C (eq. 14) and averaged over the batch (the expectation). Student and teacher maps may have
    different spatial sizes (only channel vectors are compared) but must have the same C, as eq. 14 says:
    pass the student map through its 1x1 adapter ``f_l`` first. The teacher map is detached.

    Args:
        student: ``f_l(G_l^s(x))`` [B, C, H_s, W_s]. teacher: ``G_l^t(x)`` [B, C, H_t, W_t].

    Returns:
        Scalar >= 0; 0 iff the channel means agree on every example.

    Raises:
        ValueError: not 4-D float maps, or different batch sizes or channels (names both shapes).
    """
    check_float_tensor(student, "student feature")
    check_float_tensor(teacher, "teacher feature")
    if student.dim() != 4 or teacher.dim() != 4 or student.shape[:2] != teacher.shape[:2]:
        raise ValueError("channel distillation needs maps [B, C, H, W] with the same B and C; got student "
                         f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}")
    d = channel_attention(student) - channel_attention(teacher.detach().to(student.dtype))
    return d.pow(2).sum(1).div(student.shape[1]).mean()


def channel_distillation_losses(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor]) -> torch.Tensor:
    """``L_CD`` of eq. 13: :func:`channel_distillation_loss` summed over the L layer pairs.

    Raises:
        ValueError: lists of different or zero length, or a bad pair (names its index and both shapes).
    """
    return sum_over_layers(students, teachers, lambda s, t: channel_distillation_loss(s, t))
