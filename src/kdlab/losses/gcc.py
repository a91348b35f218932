"""GCC's distillation loss (Li et al. 2021, generator-discriminator cooperative compression; VEM paper
appendix A.2.2, eqs. 16-18).

``L_GCC-KD`` (eq. 17) = the distance ``d`` (eq. 18) between the teacher discriminator's features of the
student's and of the teacher's images, summed over K discriminator layers, + ``d`` between adapted
student and teacher generator features over L layers (the 1x1 ``f_l`` of
:class:`kdlab.losses.gan_compression_distill.Conv1x1Adapters`), + ``lambda_recon`` times the L1
reconstruction to the teacher's image. GCC's selection of discriminator channels is a training-time
choice of which maps to pass, not part of the loss.
"""
from __future__ import annotations

from typing import Sequence

import torch

from kdlab.losses._common import check_float_tensor, check_mode
from kdlab.losses.image import REDUCTIONS, l1_reconstruction, reduce_per_example

GRAM_NORMS = ("chw", "none")


def gram_matrix(x: torch.Tensor, normalize: str = "chw") -> torch.Tensor:
    """``Gram(X)`` of eq. 18: the channel Gram matrix of each example, [B, C, ...] -> [B, C, C].

    ``X`` is reshaped to [C, N] (N = H*W) and ``G = X X^T``. Eq. 18 leaves its scale open; the default
    ``normalize="chw"`` divides by C*N, the style-loss normalisation of Johnson et al. 2016 (eq. 3) that
    style/Gram distillation code uses, so that ``lambda_style`` does not depend on the map size;
    ``"none"`` returns the raw ``X X^T``.
    """
    check_float_tensor(x, "x")
    check_mode(normalize, GRAM_NORMS, "normalize")
    if x.dim() < 3:
        raise ValueError(f"gram_matrix expects feature maps [B, C, H, W] (or [B, C, N]), got shape {tuple(x.shape)}")
    f = x.flatten(2)
    g = torch.bmm(f, f.transpose(1, 2))
    return g / (f.shape[1] * f.shape[2]) if normalize == "chw" else g


def gram_style_loss(student: torch.Tensor, teacher: torch.Tensor, normalize: str = "chw",
                    reduction: str = "sum") -> torch.Tensor:
    """Style term of eq. 18: ``E_x ||Gram(X) - Gram(Y)||_F^2`` (X student, Y teacher; teacher detached).

    ``reduction="sum"``: the C x C squared differences summed per example, batch mean (the equation);
    ``"mean"``: averaged over the entries too. See :func:`gram_matrix` for ``normalize``.

    Raises:
        ValueError: the two maps' shapes differ (names both).
    """
    _check_pair(student, teacher)
    d = gram_matrix(student, normalize) - gram_matrix(teacher.detach().to(student.dtype), normalize)
    return reduce_per_example(d.pow(2), reduction)


def _check_pair(student: torch.Tensor, teacher: torch.Tensor) -> None:
    check_float_tensor(student, "student feature")
    check_float_tensor(teacher, "teacher feature")
    if student.dim() < 3 or student.shape != teacher.shape:
        raise ValueError("student and teacher features must have the same shape [B, C, H, W]; got student "
                         f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}")


def gcc_distance(student: torch.Tensor, teacher: torch.Tensor, lambda_mse: float = 1.0,
                 lambda_style: float = 1.0, normalize: str = "chw", reduction: str = "sum") -> torch.Tensor:
    """``E_x d(X, Y)`` with eq. 18 ``d(X, Y) = lambda_MSE ||X - Y||_F^2 + lambda_style ||Gram(X) - Gram(Y)||_F^2``.

    ``reduction="sum"`` (the equation): each squared norm summed over the example's entries, batch mean;
    ``"mean"``: averaged over the entries (``F.mse_loss``-style) instead. Teacher detached.

    Args:
        student: X [B, C, H, W] (a discriminator feature of G^s(x), or an adapted generator feature).
        teacher: Y, same shape. lambda_mse, lambda_style: the weights of eq. 18 (>= 0).
        normalize: Gram scale (:func:`gram_matrix`). reduction: ``"sum"`` or ``"mean"``.

    Raises:
        ValueError: shapes differ (names both), negative weights, unknown modes.
    """
    _check_pair(student, teacher)
    check_mode(reduction, REDUCTIONS, "reduction")
    for name, v in (("lambda_mse", lambda_mse), ("lambda_style", lambda_style)):
        if not float(v) >= 0:
            raise ValueError(f"{name} must be >= 0, got {v!r}")
    t = teacher.detach().to(student.dtype)
    mse = reduce_per_example((student - t).pow(2), reduction)
    return lambda_mse * mse + lambda_style * gram_style_loss(student, t, normalize, reduction)


def gcc_kd_loss(student_d_features: Sequence[torch.Tensor], teacher_d_features: Sequence[torch.Tensor],
                student_g_features: Sequence[torch.Tensor], teacher_g_features: Sequence[torch.Tensor],
                student_image: torch.Tensor, teacher_image: torch.Tensor, lambda_recon: float = 1.0,
                lambda_mse: float = 1.0, lambda_style: float = 1.0, normalize: str = "chw",
                reduction: str = "sum") -> torch.Tensor:
    """``L_GCC-KD`` of eq. 17.

    ``sum_k d(D_k^t(G^s(x)), D_k^t(G^t(x))) + sum_l d(f_l(G_l^s(x)), G_l^t(x)) + lambda_recon ||G^s - G^t||_{1,1}``
    with ``d`` of eq. 18 (:func:`gcc_distance`), each term averaged over the batch.

    Args:
        student_d_features: the teacher discriminator's K maps of the student image (with graph).
        teacher_d_features: its K maps of the teacher image (detached inside).
        student_g_features: the L student generator maps after their 1x1 adapters ``f_l``; may be empty.
        teacher_g_features: the L teacher generator maps.
        student_image, teacher_image: G^s(x), G^t(x) [B, C, H, W].
        lambda_recon: weight of the L1 term (its reduction is ``reduction`` too).

    Raises:
        ValueError: lists of different lengths, or a pair of different shapes (names the pair and both shapes).
    """
    total = lambda_recon * l1_reconstruction(student_image, teacher_image, reduction)
    for what, ss, ts in (("discriminator", student_d_features, teacher_d_features),
                         ("generator", student_g_features, teacher_g_features)):
        ss, ts = list(ss), list(ts)
        if len(ss) != len(ts):
            raise ValueError(f"got {len(ss)} student and {len(ts)} teacher {what} features")
        for k, (s, t) in enumerate(zip(ss, ts)):
            try:
                total = total + gcc_distance(s, t, lambda_mse, lambda_style, normalize, reduction)
            except ValueError as e:
                raise ValueError(f"{what} feature {k}: {e}") from None
    return total
