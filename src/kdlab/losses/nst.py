"""Neuron selectivity transfer (Huang & Wang 2017, "Like what you like"): squared MMD between channel sets."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_float_tensor, check_mode, check_positive

NST_KERNELS = ("poly", "linear", "gaussian")
_EPS = 1e-12  # F.normalize's default: an all-zero channel stays zero instead of dividing by 0


def channel_vectors(feature: torch.Tensor) -> torch.Tensor:
    """Each channel's spatial response, flattened and L2-normalised: [B, C, H, W] -> [B, C, H*W], rows of
    unit norm (all-zero rows stay zero). Float32 (float64 for float64 input)."""
    dtype = torch.float64 if feature.dtype == torch.float64 else torch.float32
    return F.normalize(feature.to(dtype).flatten(2), p=2.0, dim=2, eps=_EPS)


def _kernel(x: torch.Tensor, y: torch.Tensor, kernel: str, degree: int, c: float, sigma2: torch.Tensor) -> torch.Tensor:
    """[B, N, D] x [B, M, D] -> [B, N, M] kernel values."""
    dot = torch.bmm(x, y.transpose(1, 2))
    if kernel == "linear":
        return dot
    if kernel == "poly":
        return (dot + c).pow(degree)
    sq = (x.pow(2).sum(2).unsqueeze(2) + y.pow(2).sum(2).unsqueeze(1) - 2 * dot).clamp_min(0)
    return torch.exp(-sq / (2 * sigma2.view(-1, 1, 1)))


def _mean_sq_distance(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per sample: the mean squared distance over all pairs of the pooled student and teacher vectors
    (the paper's sigma^2 for the Gaussian kernel), detached; [B]."""
    z = torch.cat([s, t], dim=1).detach()
    return torch.cdist(z, z).pow(2).mean(dim=(1, 2)).clamp_min(_EPS)


def nst_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor, kernel: str = "poly",
             degree: int = 2, c: float = 0.0, sigma2: Optional[float] = None) -> torch.Tensor:
    """Squared MMD between the student's and the teacher's sets of normalised channel responses.

    Huang & Wang 2017, "Like what you like: knowledge distill via neuron selectivity transfer", section 3:
    each channel ``i`` of a map gives the vector ``f^i = F_i / ||F_i||_2`` of its H*W spatial responses
    (a sample of the layer's "neuron selectivity" distribution); with ``s^i`` (i < C_s) the student's and
    ``t^j`` (j < C_t) the teacher's, for each example

    ``MMD^2 = 1/C_t^2 sum_{j,j'} k(t^j, t^j') + 1/C_s^2 sum_{i,i'} k(s^i, s^i') - 2/(C_s C_t) sum_{i,j} k(s^i, t^j)``

    averaged over the batch. Kernels (the three the paper studies): ``linear`` ``k = x^T y`` (MMD^2 =
    ``||mean_i s^i - mean_j t^j||^2``), ``poly`` ``k = (x^T y + c)^d`` (default d = 2, c = 0: the paper's
    best, and RepDistiller/TuSimple's code), ``gaussian`` ``k = exp(-||x - y||^2 / (2 sigma^2))`` with
    ``sigma^2`` by default (``sigma2=None``) the mean squared distance over all pairs of the example's
    student and teacher vectors, detached (our reading of the paper's "mean of squared distance of the
    pairs"). The teacher-teacher sum is a constant that makes the value an MMD (>= 0, 0 for identical maps);
    the paper's total loss weights it by lambda/2 (a term weight). Channel counts may differ; spatial
    sizes must match (RepDistiller pools the larger map instead; here pick layers of equal size). The
    teacher feature is detached.

    Args:
        student_feature: [B, C_s, H, W].
        teacher_feature: [B, C_t, H, W].
        kernel: ``'poly'`` (default), ``'linear'`` or ``'gaussian'``.
        degree: d >= 1 of the polynomial kernel (default 2).
        c: c >= 0 of the polynomial kernel (default 0).
        sigma2: sigma^2 > 0 of the Gaussian kernel, or None for the pairs' mean squared distance.

    Returns:
        Scalar >= 0 (dimensionless: the vectors have unit norm); 0 for identical features.

    Raises:
        ValueError: unknown ``kernel`` (lists the accepted ones), ``degree`` not an int >= 1, ``c`` < 0,
            ``sigma2`` not > 0, features that are not float 4-D tensors, different batch sizes or
            different spatial sizes (names both shapes).
    """
    check_mode(kernel, NST_KERNELS, "kernel")
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
        raise ValueError(f"degree must be an int >= 1, got {degree!r}")
    if not (isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 0):
        raise ValueError(f"c must be a number >= 0 (a positive semi-definite kernel), got {c!r}")
    if sigma2 is not None:
        sigma2 = check_positive(sigma2, "sigma2")
    for x, name in ((student_feature, "student_feature"), (teacher_feature, "teacher_feature")):
        check_float_tensor(x, name)
        if x.dim() != 4:
            raise ValueError(f"{name} must be a feature map [B, C, H, W], got shape {tuple(x.shape)}")
    s_shape, t_shape = tuple(student_feature.shape), tuple(teacher_feature.shape)
    if s_shape[0] != t_shape[0] or s_shape[2:] != t_shape[2:]:
        raise ValueError(f"NST needs equal batch and spatial sizes; got student {s_shape} and teacher {t_shape}")
    s = channel_vectors(student_feature)
    t = channel_vectors(teacher_feature.detach()).to(s.dtype)
    s2 = (_mean_sq_distance(s, t) if sigma2 is None else s.new_full((s.shape[0],), sigma2)) if kernel == "gaussian" \
        else s.new_ones(s.shape[0])
    k = lambda x, y: _kernel(x, y, kernel, degree, float(c), s2).mean(dim=(1, 2))  # noqa: E731
    return (k(t, t) + k(s, s) - 2 * k(s, t)).mean()
