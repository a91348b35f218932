"""MosaicKD (Fang et al., NeurIPS 2021; ``papers/002``, the supplement): the generator's and the patch
discriminator's losses as pure functions.

The generator of MosaicKD minimises (NOTES.md, the published command's weights)

    L_G = adv * L_adv + align * L_align + local * L_local + balance * L_balance

* ``L_adv = -KL(p_t || p_s)`` on G(z): the inner max of the DRO problem, supplement eq. 4 (first term);
* ``L_align = mean_i H(p_t(.|x_i))``: "globally legitimate" samples (confident teacher predictions);
* ``L_local``: the patch discriminator's non-saturating loss on G(z) (eq. 5, the regulariser R of
  eq. 4, which by eq. 7 is a JS divergence between patch distributions);
* ``L_balance = -H(mean_i p_t(.|x_i))``: supplement eq. 1, against mode collapse.

Conventions: ``B`` batch, ``K`` classes; entropies/KL in nats unless a ``log_base`` says otherwise;
nothing here detaches the teacher (the generator's gradient flows through the teacher's and the
student's INPUTS; the networks' parameters are the method's business: frozen or never stepped).
Patch maps are reduced as the published code does: BCE SUMMED over the map and divided by the batch
size (so the weight ``local`` multiplies a per-image sum over patches, not a mean).
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from kdlab.losses._common import check_float_tensor, check_logit_pair, check_mode, check_positive
from kdlab.ranks import global_mean

#: log bases of :func:`balance_loss`: ``e`` (nats, eq. 1 as an entropy) or ``2`` (bits, the published code)
BALANCE_LOG_BASES = ("e", "2", "10")

__all__ = ["BALANCE_LOG_BASES", "balance_loss", "align_loss", "patch_bce", "patch_discriminator_loss",
           "adversarial_kl", "optimal_discriminator", "gan_value"]


def _check_2d(x: torch.Tensor, name: str) -> None:
    check_float_tensor(x, name)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape [B, K] with B >= 1, got {tuple(x.shape)}")


def balance_loss(probs_or_logits: torch.Tensor, probs: bool = False, log_base: str = "e") -> torch.Tensor:
    """Class-balance loss, MosaicKD supplement eq. 1: ``L_balance = -H(E_{x~P_G} p(y|x, theta_t))``

    ``= sum_y pbar(y) log_b pbar(y)`` with ``pbar = mean_i p_t(.|x_i)`` the batch-mean teacher
    prediction (under DDP the mean over every rank's rows, :func:`kdlab.ranks.global_mean`, so W ranks
    compute the global batch's value). Minimising it spreads the generated batch over the classes. Range ``[-log_b K, 0]``:
    ``-log_b K`` iff ``pbar`` is uniform, 0 iff the whole batch predicts one class with certainty.

    The published code uses ``log2`` (``log_base="2"``, bits; its weight 10 is on that scale); the
    supplement writes an entropy without a base (``"e"``, nats). Bits = nats / ln 2. (DAFL's
    information-entropy loss, eq. 7, is the same quantity; its code and MosaicKD's data-free baseline
    use ``log10``: ``"10"``.)

    Args:
        probs_or_logits: [B, K] teacher logits (default) or probabilities (``probs=True``, rows summing to 1).
        probs: the input holds probabilities.
        log_base: one of :data:`BALANCE_LOG_BASES`.

    Returns: scalar, differentiable w.r.t. the input.
    Raises: ValueError: not a float [B, K] tensor, unknown ``log_base``, probabilities outside [0, 1].
    """
    check_mode(log_base, BALANCE_LOG_BASES, "log_base")
    _check_2d(probs_or_logits, "probs_or_logits")
    dtype = torch.float64 if probs_or_logits.dtype == torch.float64 else torch.float32
    x = probs_or_logits.to(dtype)
    if probs:
        if bool((x.detach() < 0).any()) or bool((x.detach() > 1).any()):
            raise ValueError("probs=True needs probabilities in [0, 1]; pass logits with probs=False")
        p = x
    else:
        p = F.softmax(x, dim=1)
    pbar = global_mean(p, 0)  # under DDP the global batch's mean prediction (kdlab.ranks)
    # p log p -> 0 at p = 0; the clamp keeps log finite (and its gradient) where a class has no mass
    out = (pbar * torch.log(pbar.clamp_min(torch.finfo(dtype).tiny))).sum()
    return out if log_base == "e" else out / math.log(float(log_base))


def align_loss(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Label-space alignment, MosaicKD ``L_align`` (main paper; published code "Eqn. 4"):

    ``L_align = 1/B sum_i H(p_t(.|x_i)) = -1/B sum_i sum_y p_t(y|x_i) log p_t(y|x_i)`` (nats)

    the mean entropy of the teacher's predictions on generated images; minimising it makes the
    teacher confident ("globally legitimate" samples). Not detached: the gradient reaches the
    generator through the teacher's input. Range ``[0, log K]``.

    Args: teacher_logits: [B, K]. Returns: scalar >= 0. Raises: ValueError: not a float [B, K] tensor.
    """
    _check_2d(teacher_logits, "teacher_logits")
    dtype = torch.float64 if teacher_logits.dtype == torch.float64 else torch.float32
    logp = F.log_softmax(teacher_logits.to(dtype), dim=1)
    return -(logp.exp() * logp).sum(1).mean()


def patch_bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Patch-discriminator BCE with logits, the published MosaicKD reduction:

    ``1/B sum_i sum_{cells c} BCE(sigmoid(D(x_i)_c), target)``

    i.e. SUMMED over the map and divided by the batch size (NOTES.md). With one cell per image (a
    full-image discriminator, [B]) it is the usual mean BCE; with an h x w map it is h*w times the
    per-cell mean, the scale the published weights were tuned on.

    Args:
        logits: [B] (one logit per image) or [B, 1, h, w] / [B, h, w] logit maps.
        target: the label of every cell, in [0, 1] (1 = real, 0 = generated).

    Returns: scalar >= 0. Raises: ValueError: not a float tensor with a batch dimension, target outside [0, 1].
    """
    check_float_tensor(logits, "logits")
    if logits.dim() == 0 or logits.shape[0] == 0:
        raise ValueError(f"logits must be [B] or a map [B, 1, h, w] with B >= 1, got {tuple(logits.shape)}")
    if not 0.0 <= float(target) <= 1.0:
        raise ValueError(f"target must be in [0, 1], got {target!r}")
    bce = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)), reduction="sum")
    return bce / logits.shape[0]


def patch_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The patch discriminator's loss (eq. 5 as a minimisation, published reduction):

    ``L_D = 1/2 [patch_bce(D(x_real), 1) + patch_bce(D(G(z)), 0)]``

    (the published code divides the two sums by ``2 B``: the mean of the two per-image sums). The
    caller passes ``D(G(z).detach())``: the discriminator's step must not reach the generator.

    Args: real_logits, fake_logits: [B_r(, 1, h, w)], [B_f(, 1, h, w)] logit maps. Returns: scalar >= 0.
    """
    return 0.5 * (patch_bce(real_logits, 1.0) + patch_bce(fake_logits, 0.0))


def adversarial_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The generator's adversarial term, MosaicKD supplement eq. 4 (first term, to be maximised):

    ``L_adv = -T^2 KL(softmax(z_t/T) || softmax(z_s/T))`` (batchmean, nats; published ``-kldiv(s, t)``, T = 1)

    The generator MAXIMISES the student-teacher discrepancy on its samples (so minimises this),
    through BOTH networks' inputs: neither logit tensor is detached here. The student's parameters
    are not updated by the generator's step (the method freezes them, or discards their gradients);
    the student minimises the same KL in its own step.

    Args: student_logits, teacher_logits: [B, K]; temperature: T > 0.
    Returns: scalar <= 0. Raises: ValueError: shapes differ / not [B, K], T <= 0.
    """
    t = check_positive(temperature, "temperature")
    check_logit_pair(student_logits, teacher_logits)
    dtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    log_ps = F.log_softmax(student_logits.to(dtype) / t, dim=1)
    log_pt = F.log_softmax(teacher_logits.to(dtype) / t, dim=1)
    kl = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
    return -kl * (t * t)


ArrayLike = Union[np.ndarray, torch.Tensor]


def optimal_discriminator(p_data: ArrayLike, p_g: ArrayLike) -> ArrayLike:
    """The optimal discriminator for a fixed generator, supplement eq. 6 (Goodfellow et al. 2014, Prop. 1):

    ``D*(x) = P_data(x) / (P_data(x) + P_G(x))``

    elementwise over a discrete space (or at given density values). Where both densities are 0 any
    value is optimal: 0.5 is returned there. Plugging D* into eq. 5 gives eq. 7,
    ``V(G, D*) = -log 4 + 2 JSD(P_data || P_G)`` (see :func:`gan_value`).

    Args: p_data, p_g: non-negative arrays (numpy or torch) of equal shape.
    Returns: D* of the input's type, values in [0, 1]. Raises: ValueError: shapes differ or negative values.
    """
    as_numpy = not isinstance(p_data, torch.Tensor)
    pd, pg = torch.as_tensor(np.asarray(p_data) if as_numpy else p_data), torch.as_tensor(p_g)
    if pd.shape != pg.shape:
        raise ValueError(f"p_data and p_g must have the same shape, got {tuple(pd.shape)} and {tuple(pg.shape)}")
    if bool((pd < 0).any()) or bool((pg < 0).any()):
        raise ValueError("p_data and p_g must be non-negative densities")
    den = pd + pg
    d = torch.where(den > 0, pd / torch.where(den > 0, den, torch.ones_like(den)), torch.full_like(den, 0.5))
    return d.numpy() if as_numpy else d


def gan_value(p_data: ArrayLike, p_g: ArrayLike, d: ArrayLike) -> float:
    """The GAN value function, supplement eq. 5, EXACTLY on a discrete space:

    ``V(D, G) = sum_x P_data(x) log D(x) + sum_x P_G(x) log(1 - D(x))`` (nats; 0 log 0 = 0)

    Args: p_data, p_g: distributions over the same finite set (each sums to 1); d: D(x) in [0, 1].
    Returns: float (``-inf`` when D puts 0 on data mass or 1 on generated mass).
    """
    pd, pg, dd = (np.asarray(a, dtype=np.float64) for a in (p_data, p_g, d))
    with np.errstate(divide="ignore"):
        real = np.where(pd > 0, pd * np.log(np.where(pd > 0, dd, 1.0)), 0.0)
        fake = np.where(pg > 0, pg * np.log(np.where(pg > 0, 1.0 - dd, 1.0)), 0.0)
    return float(real.sum() + fake.sum())
