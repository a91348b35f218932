"""GAN-Compression's intermediate feature distillation through learned 1x1 convolutions (Li et al. 2020;
VEM paper appendix A.2.3, eqs. 19-21).

``L_algo = L_GAN + lambda_recon L_recon + lambda_distill L_distill`` (eq. 19); ``L_recon`` (eq. 20) is
:func:`kdlab.losses.image.l1_reconstruction` against the ground truth (paired data) or the teacher's output
(unpaired data); ``L_GAN`` is the method's adversarial loss. :class:`FeatureDistillLoss` is eq. 21.

Out of scope: GAN-Compression's once-for-all supernet training and its channel-configuration search;
this module is the distillation loss of one fixed student architecture.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

from kdlab.losses._common import check_float_tensor, check_mode
from kdlab.losses.image import REDUCTIONS, reduce_per_example


def _check_channels(channels: Sequence[int], name: str) -> List[int]:
    channels = list(channels)
    for c in channels:
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"{name} must be positive ints, got {channels!r}")
    return channels


class Conv1x1Adapters(nn.Module):
    """The ``f_l`` of eqs. 13, 17, 21 and 26: one 1x1 convolution per layer, student channels -> teacher's.

    As in the GAN-Compression code: ``nn.Conv2d(C_s, C_t, 1)`` with bias, no normalisation (so an adapter
    can map a student feature exactly onto a teacher's); ``bias=False`` as GCC's ``transform_convs``
    (SJLeo/GCC models/SAGAN.py ``SAGANModel.__init__``). Its parameters belong to the student side: give
    them to the student optimizer.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int], bias: bool = True) -> None:
        super().__init__()
        s = _check_channels(student_channels, "student_channels")
        t = _check_channels(teacher_channels, "teacher_channels")
        if not s or len(s) != len(t):
            raise ValueError(f"need as many student as teacher layers (>= 1); got {s} and {t}")
        self.student_channels, self.teacher_channels = s, t
        self.adapters = nn.ModuleList(nn.Conv2d(a, b, kernel_size=1, bias=bias) for a, b in zip(s, t))

    def adapt(self, students: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """``[f_l(G_l^s(x))]`` for the L student maps [B, C_s_l, H, W].

        Raises:
            ValueError: a wrong number of maps, or a map that is not [B, C_s_l, H, W] (names its shape).
        """
        students = list(students)
        if len(students) != len(self.adapters):
            raise ValueError(f"{type(self).__name__} has {len(self.adapters)} adapters; got {len(students)} maps")
        out = []
        for k, (s, conv) in enumerate(zip(students, self.adapters)):
            check_float_tensor(s, f"student feature {k}")
            c_in = self.student_channels[k]
            if s.dim() != 4 or s.shape[1] != c_in:
                raise ValueError(f"layer {k}: adapter expects a student map [B, {c_in}, H, W], got {tuple(s.shape)}")
            out.append(conv(s))
        return out

    def extra_repr(self) -> str:
        return f"student_channels={self.student_channels}, teacher_channels={self.teacher_channels}"


class FeatureDistillLoss(Conv1x1Adapters):
    """``L_distill = sum_l E_x ||f_l(G_l^s(x)) - G_l^t(x)||_F^2`` (VEM paper eq. 21; GAN-Compression).

    ``reduction="sum"`` (default, the equation): the squared Frobenius norm of each example's difference,
    averaged over the batch; ``"mean"``: the per-element mean (``F.mse_loss``, the GAN-Compression code's
    convention), i.e. each layer's value divided by C_t H W. Teacher maps are detached. The once-for-all
    search of GAN-Compression is out of scope (see the module docstring).

    Args:
        student_channels, teacher_channels: C_s_l and C_t_l per distilled layer.
        reduction: ``"sum"`` or ``"mean"``.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 reduction: str = "sum") -> None:
        super().__init__(student_channels, teacher_channels)
        self.reduction = check_mode(reduction, REDUCTIONS, "reduction")

    def forward(self, students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor]) -> torch.Tensor:
        """Eq. 21 for the L layer pairs.

        Raises:
            ValueError: wrong numbers of maps, or an adapted student map whose shape differs from its
                teacher map (names both shapes).
        """
        students, teachers = list(students), list(teachers)
        adapted = self.adapt(students)
        if len(teachers) != len(adapted):
            raise ValueError(f"got {len(adapted)} student and {len(teachers)} teacher maps")
        total = None
        for k, (a, t) in enumerate(zip(adapted, teachers)):
            check_float_tensor(t, f"teacher feature {k}")
            if a.shape != t.shape:
                raise ValueError(f"layer {k}: adapted student {tuple(a.shape)} and teacher {tuple(t.shape)} differ "
                                 f"(student map {tuple(students[k].shape)})")
            term = reduce_per_example((a - t.detach().to(a.dtype)).pow(2), self.reduction)
            total = term if total is None else total + term
        return total

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reduction={self.reduction!r}"
