"""OMGD's channel distillation (Ren et al. 2021; VEM paper appendix A.2.1, eqs. 13-14).

Also OMGD's style loss (:func:`style_loss`, in its code though not in the VEM paper's eq. 15). The other OMGD
terms (eqs. 12, 15) are image distances of :mod:`kdlab.losses.image`: ``ssim_loss``, ``perceptual_loss``,
``l1_reconstruction`` and ``total_variation``. The adapters ``f_l`` of eq. 13 are
:class:`kdlab.losses.gan_compression_distill.Conv1x1Adapters` (1x1 conv, or OMGD's conv + BN + ReLU); the
functions here take the student features after them.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from kdlab.losses._common import check_float_tensor, sum_over_layers
from kdlab.losses.gan_compression_distill import Conv1x1Adapters
from kdlab.losses.gcc import gram_matrix
from kdlab.losses.image import FeatureFn, _feature_pairs, _layer_weights, check_image_pair


class ConvBNReLUAdapters(Conv1x1Adapters):
    """OMGD's ``f_l`` of eq. 13: per layer ``ReLU(BN(Conv1x1(x)))``, student channels -> teacher channels.

    As bytedance/OMGD ``distillers/base_multiteacher_distiller.py``, ``build_feature_connector``: a bias-free
    1x1 convolution, ``BatchNorm2d``, ``ReLU``; then ``networks.init_net`` re-initialises them the pix2pix way
    (conv weights ~ N(0, 0.02), BN weights ~ N(1, 0.02), BN biases 0), which overrides the He init written in
    ``build_feature_connector``. ``adapt`` as :class:`Conv1x1Adapters`; the parameters go to the student's optimizer.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        super().__init__(student_channels, teacher_channels)
        self.adapters = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, kernel_size=1, bias=False), nn.BatchNorm2d(b), nn.ReLU())
            for a, b in zip(self.student_channels, self.teacher_channels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)


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


def style_loss(student: torch.Tensor, teacher: torch.Tensor, features: FeatureFn,
               layer_weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """OMGD's style loss ``sum_j w_j mean |Gram(phi_j(G^s(x))) - Gram(phi_j(G^t(x)))|``.

    ``Gram(F) = F F^T / (C H W)`` per example (:func:`kdlab.losses.gcc.gram_matrix`, ``normalize="chw"``),
    ``phi_j`` the maps the frozen feature network ``features`` returns (OMGD: VGG-16 relu1_2, relu2_2,
    relu3_3, relu4_3), the absolute difference averaged over B x C_j x C_j (``F.l1_loss``) and summed over the
    layers with weights ``layer_weights`` (default 1). Source: bytedance/OMGD
    ``distillers/multiteacher_distiller.py``, ``MultiTeacherDistiller.backward_G_student`` and ``.gram``
    (Gatys et al. 2016's style reconstruction); the VEM paper's eq. 15 omits this term, the code weighs it
    1e4. The teacher image's features are taken without a graph.

    Args:
        student, teacher: images [B, C, H, W] of one shape. features: image batch -> list of maps [B, C_j, H_j, W_j].

    Returns:
        Scalar >= 0; 0 when every layer's Gram matrices agree (e.g. equal images).

    Raises:
        ValueError: image shapes differ, feature lists that do not pair up, a feature that is not a map.
    """
    check_image_pair(student, teacher)
    f_s, f_t = _feature_pairs(student, teacher, features)
    weights = _layer_weights(layer_weights, len(f_s))
    for k, a in enumerate(f_s):
        if a.dim() != 4:
            raise ValueError(f"style_loss needs feature maps [B, C, H, W]; feature {k} is {tuple(a.shape)}")
    return sum(w * (gram_matrix(a) - gram_matrix(b.to(a.dtype))).abs().mean() for w, a, b in zip(weights, f_s, f_t))
