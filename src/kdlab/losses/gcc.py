"""GCC's distillation loss (Li et al. 2021, generator-discriminator cooperative compression; VEM paper
appendix A.2.2, eqs. 16-18).

``L_GCC-KD`` (eq. 17) = the distance ``d`` (eq. 18) between the teacher discriminator's features of the
student's and of the teacher's images, summed over K discriminator layers, + ``d`` between adapted
student and teacher generator features over L layers (the 1x1 ``f_l`` of
:class:`kdlab.losses.gan_compression_distill.Conv1x1Adapters`), + ``lambda_recon`` times the L1
reconstruction to the teacher's image.

Distance: eq. 18 writes squared Frobenius norms; GCC's code (SJLeo/GCC models/SAGAN.py and Pix2Pix.py,
``backward_G``) takes the square root of the mean squared error, ``sqrt(MSE(X, Y))`` and
``sqrt(MSE(Gram X, Gram Y))``, each a mean over the whole batch and every entry. Both are offered
(``distance="root"``: the code, kdlab's default; ``"squared"``: the equation).

GCC's selective activation discriminator (its sec. 3.2): the student's discriminator has learnable channel
gates (:class:`kdlab.models.gates.ChannelGate`) trained by the architecture loss
:func:`selective_activation_loss`, which keeps the student's adversarial gap close to the teacher's.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_float_tensor, check_mode
from kdlab.losses.image import REDUCTIONS, l1_reconstruction, reduce_per_example

GRAM_NORMS = ("chw", "none")
#: eq. 18's distance: ``root`` = GCC's code ``sqrt(mean squared error)``; ``squared`` = the equation's squared norm
DISTANCES = ("root", "squared")
#: the games whose losses the architecture loss reads (GCC's ``GANLoss`` modes)
GAP_MODES = ("vanilla", "lsgan", "hinge")


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
                 lambda_style: float = 1.0, normalize: str = "chw", reduction: str = "sum",
                 distance: str = "squared") -> torch.Tensor:
    """``E_x d(X, Y)`` with eq. 18 ``d(X, Y) = lambda_MSE ||X - Y||_F^2 + lambda_style ||Gram(X) - Gram(Y)||_F^2``.

    ``distance="squared"`` (the equation): ``reduction="sum"`` sums each squared norm over the example's
    entries, batch mean; ``"mean"`` averages over the entries (``F.mse_loss``-style) instead.
    ``distance="root"`` (GCC's code, ``backward_G``): ``lambda_mse * sqrt(mean (X - Y)^2) + lambda_style *
    sqrt(mean (Gram X - Gram Y)^2)``, each mean over the batch and every entry (``reduction`` unused).
    Teacher detached.

    Args:
        student: X [B, C, H, W] (a discriminator feature of G^s(x), or an adapted generator feature).
        teacher: Y, same shape. lambda_mse, lambda_style: the weights of eq. 18 (>= 0).
        normalize: Gram scale (:func:`gram_matrix`). reduction: ``"sum"`` or ``"mean"``.
        distance: ``"squared"`` or ``"root"``.

    Raises:
        ValueError: shapes differ (names both), negative weights, unknown modes.
    """
    _check_pair(student, teacher)
    check_mode(reduction, REDUCTIONS, "reduction")
    check_mode(distance, DISTANCES, "distance")
    for name, v in (("lambda_mse", lambda_mse), ("lambda_style", lambda_style)):
        if not float(v) >= 0:
            raise ValueError(f"{name} must be >= 0, got {v!r}")
    t = teacher.detach().to(student.dtype)
    if distance == "root":
        gram = gram_matrix(student, normalize) - gram_matrix(t, normalize)
        # the square root's gradient is infinite at 0: a zero distance contributes 0 and no gradient
        return lambda_mse * _root_mse(student - t) + lambda_style * _root_mse(gram)
    mse = reduce_per_example((student - t).pow(2), reduction)
    return lambda_mse * mse + lambda_style * gram_style_loss(student, t, normalize, reduction)


def _root_mse(diff: torch.Tensor) -> torch.Tensor:
    """``sqrt(mean diff^2)``; 0 (with a zero gradient) where the mean is 0."""
    m = diff.pow(2).mean()
    return torch.where(m > 0, m.clamp_min(torch.finfo(m.dtype).tiny).sqrt(), torch.zeros_like(m))


def gcc_kd_loss(student_d_features: Sequence[torch.Tensor], teacher_d_features: Sequence[torch.Tensor],
                student_g_features: Sequence[torch.Tensor], teacher_g_features: Sequence[torch.Tensor],
                student_image: torch.Tensor, teacher_image: torch.Tensor, lambda_recon: float = 1.0,
                lambda_mse: float = 1.0, lambda_style: float = 1.0, normalize: str = "chw",
                reduction: str = "sum", distance: str = "squared") -> torch.Tensor:
    """``L_GCC-KD`` of eq. 17.

    ``sum_k d(D_k^t(G^s(x)), D_k^t(G^t(x))) + sum_l d(f_l(G_l^s(x)), G_l^t(x)) + lambda_recon ||G^s - G^t||_{1,1}``
    with ``d`` of eq. 18 (:func:`gcc_distance`), each term averaged over the batch.

    Args:
        student_d_features: the teacher discriminator's K maps of the student image (with graph).
        teacher_d_features: its K maps of the teacher image (detached inside).
        student_g_features: the L student generator maps after their 1x1 adapters ``f_l``; may be empty.
        teacher_g_features: the L teacher generator maps.
        student_image, teacher_image: G^s(x), G^t(x) [B, C, H, W].
        lambda_recon: weight of the L1 term (its reduction is ``reduction`` too; ``"mean"`` is GCC's ``L1Loss``).
        distance: ``"squared"`` (eq. 18) or ``"root"`` (GCC's code), see :func:`gcc_distance`.

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
                total = total + gcc_distance(s, t, lambda_mse, lambda_style, normalize, reduction, distance)
            except ValueError as e:
                raise ValueError(f"{what} feature {k}: {e}") from None
    return total


def gan_halves(fake_scores: torch.Tensor, mode: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(L_D^fake, L_G)`` of one game on a discriminator's outputs for generated images (any shape, mean
    over every entry), as GCC's ``GANLoss``: ``L_D^fake = criterionGAN(pred, False, for_discriminator=True)``
    and ``L_G = criterionGAN(pred, True, for_discriminator=False)`` (SJLeo/GCC models/GANLoss.py):
    vanilla ``BCE(p, 0)``, ``BCE(p, 1)``; lsgan ``mean p^2``, ``mean (p - 1)^2``; hinge ``mean relu(1 + p)``, ``-mean p``.

    Raises:
        ValueError: an unknown mode (lists vanilla, lsgan, hinge), non-float scores.
    """
    check_float_tensor(fake_scores, "fake_scores")
    check_mode(mode, GAP_MODES, "mode")
    p = fake_scores
    if mode == "hinge":
        return F.relu(1.0 + p).mean(), -p.mean()
    if mode == "lsgan":
        return p.pow(2).mean(), (p - 1.0).pow(2).mean()
    return (F.binary_cross_entropy_with_logits(p, torch.zeros_like(p)),
            F.binary_cross_entropy_with_logits(p, torch.ones_like(p)))


def adversarial_gap(fake_scores: torch.Tensor, mode: str) -> torch.Tensor:
    """GCC's gap of a discriminator on generated images: ``|L_G - L_D^fake|`` (:func:`gan_halves`; SJLeo/GCC
    models/SAGAN.py ``get_D_arch_diff``: ``criterionL1(loss_D_arch_fake_real, loss_D_arch_fake)``). Scalar >= 0."""
    d_fake, g = gan_halves(fake_scores, mode)
    return (g - d_fake).abs()


def selective_activation_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor, teacher_gap: torch.Tensor,
                              mode: str = "hinge", d_weight: float = 1.0) -> torch.Tensor:
    """GCC's architecture loss of the student's gated discriminator (its sec. 3.2; SJLeo/GCC models/SAGAN.py
    ``backward_D_arch``, Pix2Pix.py the same with ``d_weight = 0.5``):

    ``L_arch = | gap(D^s(G^s(z))) - gap_t | + d_weight * (L_D^real(D^s(x)) + L_D^fake(D^s(G^s(z))))``

    with ``gap = |L_G - L_D^fake|`` (:func:`adversarial_gap`) and ``gap_t`` the teacher's gap on its own images
    (``D^t(G^t(z))``, no gradient; GCC smooths it over steps, see :class:`kdlab.terms.selective_activation`).
    Minimised over the student discriminator's channel gates only.

    Args:
        real_scores: D^s's outputs on real images (any shape). fake_scores: D^s's outputs on the student's
            images (detached from the student). teacher_gap: scalar. mode: vanilla | lsgan | hinge.
        d_weight: weight of D's own loss (>= 0; GCC: 1 on SAGAN, 0.5 on Pix2Pix).

    Raises:
        ValueError: an unknown mode, a negative d_weight, non-float scores.
    """
    check_float_tensor(real_scores, "real_scores")
    if not float(d_weight) >= 0:
        raise ValueError(f"d_weight must be >= 0, got {d_weight!r}")
    d_fake, g = gan_halves(fake_scores, mode)
    # L_D^real: hinge mean relu(1 - p) = the fake half of -p; vanilla BCE(p, 1) and lsgan (p - 1)^2 = L_G's form
    d_real = gan_halves(-real_scores, mode)[0] if mode == "hinge" else gan_halves(real_scores, mode)[1]
    gap = (g - d_fake).abs()
    return (gap - teacher_gap.detach().to(gap.dtype)).abs() + float(d_weight) * (d_real + d_fake)

