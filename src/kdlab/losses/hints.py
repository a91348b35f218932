"""FitNets hint loss with a learned regressor (Romero et al. 2015)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdlab.losses._common import check_float_tensor


class HintLoss(nn.Module):
    """FitNets hint loss: ``MSE(r(F_s), F_t)`` with a learned regressor ``r``.

    Source: Romero et al., "FitNets: Hints for thin deep nets", ICLR 2015, eq. 3
    (``1/2 ||u_h(x) - r(v_g(x))||^2``). Conventions here: the squared error is *averaged over
    all elements* (``F.mse_loss``, as in RepDistiller/torchdistill; FitNets' 1/2 and sum are a
    constant factor a weight absorbs), and the teacher feature is detached.

    The regressor maps the student's channels onto the teacher's:

    * ``ndim=4`` (features [B, C, H, W]): 1x1 convolution (no bias) + BatchNorm2d. FitNets'
      convolutional regressor changes the spatial size with its kernel; here student and teacher
      must already have the same H x W (choose hint layers accordingly).
    * ``ndim=2`` (features [B, D]): a linear layer ``D_s -> D_t`` (with bias).

    The regressor's parameters belong to the student side: give them to the student optimizer.

    Args:
        student_channels: C_s (or D_s), >= 1.
        teacher_channels: C_t (or D_t), >= 1.
        ndim: 4 for convolutional feature maps, 2 for vectors.

    Raises:
        ValueError: non-positive channel counts or ``ndim`` not in (2, 4) at construction; at call
            time, a feature with the wrong number of dimensions or channels, different batch sizes,
            or a spatial-size mismatch (the message names both shapes).
    """

    def __init__(self, student_channels: int, teacher_channels: int, ndim: int = 4) -> None:
        super().__init__()
        for name, c in (("student_channels", student_channels), ("teacher_channels", teacher_channels)):
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise ValueError(f"{name} must be a positive int, got {c!r}")
        if ndim not in (2, 4):
            raise ValueError(f"ndim must be 4 (features [B,C,H,W]) or 2 (features [B,D]), got {ndim!r}")
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.ndim = ndim
        if ndim == 4:
            self.regressor: nn.Module = nn.Sequential(
                nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False),
                nn.BatchNorm2d(teacher_channels),
            )
        else:
            self.regressor = nn.Linear(student_channels, teacher_channels)

    @classmethod
    def from_shapes(cls, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> "HintLoss":
        """Build from per-sample feature shapes, e.g. those of ``kdlab.models.feature_shapes``.

        Args:
            student_shape: ``(C_s, H, W)`` or ``(D_s,)``.
            teacher_shape: ``(C_t, H, W)`` or ``(D_t,)``, same length and same H, W.

        Raises:
            ValueError: shapes of other lengths, of different lengths, or with different H, W
                (names both shapes).
        """
        s, t = tuple(int(v) for v in student_shape), tuple(int(v) for v in teacher_shape)
        if len(s) not in (1, 3) or len(s) != len(t):
            raise ValueError(
                "hint features must both be per-sample (C, H, W) or both (D,); got student "
                f"{s} and teacher {t}"
            )
        if s[1:] != t[1:]:
            raise ValueError(
                f"hint features must have the same spatial size; got student {s} and teacher {t}"
            )
        return cls(s[0], t[0], ndim=len(s) + 1)

    def extra_repr(self) -> str:
        return f"student_channels={self.student_channels}, teacher_channels={self.teacher_channels}, ndim={self.ndim}"

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
        """Hint loss for one pair of features.

        Args:
            student_feature: [B, C_s, H, W] (ndim 4) or [B, D_s] (ndim 2).
            teacher_feature: [B, C_t, H, W] or [B, D_t]; detached inside.

        Returns:
            Scalar mean squared error between ``regressor(student_feature)`` and the teacher
            feature (units of the teacher's activations squared), >= 0.

        Raises:
            ValueError: see the class docstring.
        """
        check_float_tensor(student_feature, "student_feature")
        check_float_tensor(teacher_feature, "teacher_feature")
        s_shape, t_shape = tuple(student_feature.shape), tuple(teacher_feature.shape)
        want = "[B, C, H, W]" if self.ndim == 4 else "[B, D]"
        if student_feature.dim() != self.ndim or teacher_feature.dim() != self.ndim:
            raise ValueError(
                f"HintLoss(ndim={self.ndim}) expects features {want}; got student {s_shape} and teacher {t_shape}"
            )
        if s_shape[0] != t_shape[0]:
            raise ValueError(f"batch sizes differ: student {s_shape} and teacher {t_shape}")
        if s_shape[1] != self.student_channels or t_shape[1] != self.teacher_channels:
            raise ValueError(
                f"HintLoss was built for {self.student_channels} student and {self.teacher_channels} teacher "
                f"channels; got student {s_shape} and teacher {t_shape}"
            )
        if s_shape[2:] != t_shape[2:]:
            raise ValueError(
                f"hint features must have the same spatial size; got student {s_shape} and teacher {t_shape}"
            )
        regressed = self.regressor(student_feature)
        return F.mse_loss(regressed, teacher_feature.detach().to(regressed.dtype))
