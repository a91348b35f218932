"""Variational information distillation (Ahn et al. 2019, eqs. 2-5): a Gaussian q(t | s) per channel."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.losses._common import check_float_tensor, check_positive

#: RepDistiller ``VIDLoss`` defaults (``init_pred_var=5.0, eps=1e-5``); eps is also the paper's eq. 5.
VID_INIT_VAR = 5.0
VID_EPS = 1e-5
#: The smallest default middle width of the mean regressor: RepDistiller uses the teacher's channel
#: count, which for 1- or 3-channel generator images would be a bottleneck that cannot even represent
#: a signed identity through the ReLUs.
VID_MIN_MID = 16


def vid_loss(mean: torch.Tensor, teacher: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the teacher under the Gaussian ``q(t | s) = N(mu(s), diag(sigma^2))``.

    Ahn et al., "Variational Information Distillation for Knowledge Transfer", CVPR 2019, eqs. 2-4:
    minimising ``-E log q(t | s)`` maximises the variational lower bound of ``I(t; s)``. Per element
    (batch b, channel c, position h, w):

        ``0.5 * (log sigma_c^2 + (t_bchw - mu_bchw)^2 / sigma_c^2)``

    Conventions: the constant ``0.5 * log(2 pi)`` is DROPPED (as RepDistiller; it moves no gradient, so
    the value can be negative); the per-element terms are AVERAGED over batch, channels and positions
    (RepDistiller's ``torch.mean``; the paper sums over channels and positions, a factor C*H*W that a
    weight absorbs); ``teacher`` is detached. Computed in float32 (float64 for float64 inputs).

    Args:
        mean: mu(s), [B, C, H, W] or [B, C] (the regressed student feature; carries the gradient).
        teacher: t, the same shape as ``mean`` (detached inside).
        variance: sigma^2 > 0 per channel, [C] (trainable; see :class:`VIDLoss`).

    Returns:
        Scalar tensor (nats per element, without the constant).

    Raises:
        ValueError: inputs that are not float tensors, ``mean`` not 2-D or 4-D, ``mean``/``teacher``
            shapes that differ, ``variance`` not of shape [C], or a variance that is not > 0 (names them).
    """
    check_float_tensor(mean, "mean")
    check_float_tensor(teacher, "teacher")
    check_float_tensor(variance, "variance")
    if mean.dim() not in (2, 4):
        raise ValueError(f"mean must have shape [B, C, H, W] or [B, C]; got {tuple(mean.shape)}")
    if mean.shape != teacher.shape:
        raise ValueError(f"mean and teacher must have the same shape; got mean {tuple(mean.shape)} and "
                         f"teacher {tuple(teacher.shape)}")
    if variance.dim() != 1 or variance.shape[0] != mean.shape[1]:
        raise ValueError(f"variance must have shape [C] = [{mean.shape[1]}] (one per channel of mean "
                         f"{tuple(mean.shape)}); got {tuple(variance.shape)}")
    if not bool((variance > 0).all()):
        raise ValueError(f"variance must be > 0 everywhere; got min {float(variance.min())}")
    dtype = torch.float64 if mean.dtype == torch.float64 else torch.float32
    var = variance.to(dtype).view(1, -1, *([1] * (mean.dim() - 2)))
    diff = teacher.detach().to(dtype) - mean.to(dtype)
    return 0.5 * (torch.log(var) + diff.pow(2) / var).mean()


def _regressor(c_in: int, mid: int, c_out: int, maps: bool) -> nn.Sequential:
    # RepDistiller: conv1x1 -> ReLU -> conv1x1 -> ReLU -> conv1x1, no biases; linear layers for vectors
    layer = (lambda a, b: nn.Conv2d(a, b, kernel_size=1, bias=False)) if maps else (lambda a, b: nn.Linear(a, b, bias=False))
    return nn.Sequential(layer(c_in, mid), nn.ReLU(), layer(mid, mid), nn.ReLU(), layer(mid, c_out))


class VIDLoss(nn.Module):
    """VID for one (student, teacher) feature pair: a learned mean regressor and per-channel variances.

    Ahn et al. 2019, eqs. 2-5: ``q(t | s) = prod_c N(t_c; mu_c(s), sigma_c^2)`` with ``mu`` a small
    network of the student feature (here, as RepDistiller: 1x1 conv -> ReLU -> 1x1 conv -> ReLU -> 1x1
    conv without biases for maps; the same with linear layers for vectors) and (eq. 5)
    ``sigma_c^2 = softplus(alpha_c) + eps``, ``alpha_c`` initialised to ``log(exp(init_var - eps) - 1)``
    so that every initial variance is exactly ``init_var`` (RepDistiller ``init_pred_var = 5.0``,
    ``eps = 1e-5``). The loss is :func:`vid_loss` (mean NLL without its constant). The regressor and
    ``alpha`` are trainable: give them to the student's optimizer (a term does so by owning this module).

    Spatial sizes (as RepDistiller): when the student map is larger than the teacher's it is average-
    pooled to the teacher's (H, W) before the regressor; when it is smaller, the (detached) teacher map
    is pooled to the student's size instead.

    Args:
        student_shape: per-sample student feature shape (C_s, H_s, W_s) or (D_s,).
        teacher_shape: per-sample teacher feature shape (C_t, H_t, W_t) or (D_t,) (same rank).
        mid_channels: the regressor's middle width; None = ``max(C_t, 16)`` (RepDistiller: C_t).
        init_var: initial sigma^2 > eps (default 5.0, RepDistiller).
        eps: the variance floor > 0 (default 1e-5, RepDistiller / paper eq. 5).

    Raises:
        ValueError: a map paired with a vector, other ranks, non-positive sizes, ``init_var <= eps``.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int], mid_channels: Optional[int] = None,
                 init_var: float = VID_INIT_VAR, eps: float = VID_EPS) -> None:
        super().__init__()
        s, t = tuple(int(v) for v in student_shape), tuple(int(v) for v in teacher_shape)
        if len(s) != len(t) or len(s) not in (1, 3) or min(s + t) < 1:
            raise ValueError(f"VID features must both be maps (C, H, W) or both vectors (D,); got student {s} and teacher {t}")
        self.eps = check_positive(eps, "eps")
        init_var = check_positive(init_var, "init_var")
        if init_var <= self.eps:
            raise ValueError(f"init_var must be > eps = {self.eps}; got {init_var}")
        mid = max(t[0], VID_MIN_MID) if mid_channels is None else int(mid_channels)
        if mid < 1:
            raise ValueError(f"mid_channels must be >= 1 (or None), got {mid_channels!r}")
        self.shapes: Tuple[Tuple[int, ...], Tuple[int, ...]] = (s, t)
        self.maps = len(s) == 3
        self.regressor = _regressor(s[0], mid, t[0], self.maps)
        # softplus^{-1}(init_var - eps), in float64 then stored as float32
        self.alpha = nn.Parameter(torch.full((t[0],), math.log(math.expm1(init_var - self.eps))))

    def extra_repr(self) -> str:
        return f"student={self.shapes[0]}, teacher={self.shapes[1]}, eps={self.eps}"

    def variance(self) -> torch.Tensor:
        """sigma^2 per teacher channel, [C_t] (paper eq. 5)."""
        return F.softplus(self.alpha) + self.eps

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
        """VID loss of one pair: ``vid_loss(regressor(pool(s)), pool(t), variance())``.

        Args:
            student_feature: [B, C_s, H_s, W_s] or [B, D_s]; teacher_feature: [B, C_t, H_t, W_t] or [B, D_t]
                (detached inside).

        Raises:
            ValueError: shapes other than the ones the module was built for, different batch sizes.
        """
        check_float_tensor(student_feature, "student_feature")
        check_float_tensor(teacher_feature, "teacher_feature")
        s_shape, t_shape = tuple(student_feature.shape), tuple(teacher_feature.shape)
        if s_shape[1:] != self.shapes[0] or t_shape[1:] != self.shapes[1] or s_shape[0] != t_shape[0]:
            raise ValueError(f"VIDLoss was built for student [B, {self.shapes[0]}] and teacher [B, {self.shapes[1]}]; "
                             f"got student {s_shape} and teacher {t_shape}")
        s, t = student_feature, teacher_feature.detach()
        if self.maps:
            hs, ws = s_shape[2:]
            ht, wt = t_shape[2:]
            if (hs, ws) != (ht, wt):
                if hs >= ht and ws >= wt:
                    s = F.adaptive_avg_pool2d(s, (ht, wt))
                else:
                    t = F.adaptive_avg_pool2d(t, (min(hs, ht), min(ws, wt)))
                    s = F.adaptive_avg_pool2d(s, t.shape[2:]) if s.shape[2:] != t.shape[2:] else s
        mean = self.regressor(s)
        return vid_loss(mean, t, self.variance())
