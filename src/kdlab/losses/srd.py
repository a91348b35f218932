"""Softmax regression representation learning (Yang, Martinez, Bulat & Tzimiropoulos, ICLR 2021)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_feature_pair, check_logit_pair, check_mode, check_positive

#: Feature terms: ``mean`` = mean |d|^p (p = 2: Yang et al.'s L2 feature matching, as MSE);
#: ``log_sum`` = log sum |d|^p (torchdistill's ``SRDLoss``, Miles & Mikolajczyk, AAAI 2024).
SRD_FEATURE_MODES = ("mean", "log_sum")
#: Logit terms: ``kl`` = T^2 KL(softmax(z_t/T) || softmax(z_st/T)), batchmean; ``mse`` = mean (z_st - z_t)^2
#: (the authors' code KD_SRRL, the "simple L2 loss" of the abstract).
SRD_LOGIT_MODES = ("kl", "mse")


def _nonneg(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def srd_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor, student_logits: torch.Tensor,
             teacher_logits: torch.Tensor, temperature: float = 1.0, exponent: float = 2.0, alpha: float = 1.0,
             beta: float = 1.0, feature: str = "mean", logit: str = "kl") -> torch.Tensor:
    """SRD/SRRL loss: ``alpha * L_FM + beta * L_SR`` on the connected student feature.

    Source: Yang et al., "Knowledge distillation via softmax regression representation learning",
    ICLR 2021 (sec. 3: feature matching ``L_FM = ||h_T - r(h_S)||^2`` of the penultimate features
    through a connector ``r``; softmax regression ``L_SR``: the teacher's frozen classifier ``W_T``
    applied to ``r(h_S)`` must give the teacher's output; overall ``L_CE + alpha L_FM + beta L_SR``).
    Here, with ``d = student_feature - teacher_feature`` (``student_feature`` = ``r(h_S)``,
    ``student_logits`` = ``W_T r(h_S)``, both made by the caller, e.g. :class:`kdlab.terms.srd.SRDTerm`):

        L_FM = mean(|d|^p)                         feature="mean" (p = 2: MSE, Yang et al.)
             = log(sum(|d|^p))                     feature="log_sum" (torchdistill SRDLoss)
        L_SR = T^2 KL(softmax(z_t/T) || softmax(z_st/T))   logit="kl" (KL summed over classes,
                                                              averaged over the batch)
             = mean((z_st - z_t)^2)                logit="mse" (the authors' code)

    Conventions: ``mean`` averages over every element (batch x feature); ``log_sum`` sums over every
    element (its gradient does not depend on the batch size: ``d log(B m) = d log m``). torchdistill's
    ``SRDLoss`` (which implements Miles & Mikolajczyk, "Understanding the role of the projector in
    knowledge distillation", AAAI 2024, not Yang et al.) uses ``2 * log(sum |d|^p)`` with default
    exponent 1 plus a KL without T^2 on the student's own logits: ``feature="log_sum", alpha=2,
    exponent=1`` reproduces its feature term. Teacher feature and logits detached; defaults (T 1,
    p 2, alpha 1, beta 1) are Yang et al.'s/KD_SRRL's unit weights; T 1 is torchdistill's default.

    Args:
        student_feature: [B, ...] the connected student feature ``r(h_S)``.
        teacher_feature: same shape as ``student_feature`` (detached inside).
        student_logits: [B, K] the teacher's classifier applied to ``student_feature``.
        teacher_logits: [B, K] (detached inside).
        temperature: T > 0. exponent: p > 0. alpha, beta: weights >= 0.
        feature: one of :data:`SRD_FEATURE_MODES`. logit: one of :data:`SRD_LOGIT_MODES`.

    Returns:
        A scalar (>= 0 for ``feature="mean"``; ``log_sum`` may be negative, -inf for equal features).

    Raises:
        ValueError: bad temperature/exponent/weights or modes; features of different shapes or
            without a batch dimension, logits not float [B, K] of equal shapes, or feature and logit
            batch sizes that differ (messages name the shapes).
    """
    t = check_positive(temperature, "temperature")
    p = check_positive(exponent, "exponent")
    alpha, beta = _nonneg(alpha, "alpha"), _nonneg(beta, "beta")
    check_mode(feature, SRD_FEATURE_MODES, "feature mode")
    check_mode(logit, SRD_LOGIT_MODES, "logit mode")
    check_feature_pair(student_feature, teacher_feature)
    check_logit_pair(student_logits, teacher_logits)
    if student_logits.shape[0] != student_feature.shape[0]:
        raise ValueError(f"features {tuple(student_feature.shape)} and logits {tuple(student_logits.shape)} "
                         "have different batch sizes")
    dtype = torch.float64 if student_feature.dtype == torch.float64 else torch.float32
    d = (student_feature.to(dtype) - teacher_feature.detach().to(dtype)).abs().pow(p)
    fm = d.mean() if feature == "mean" else d.sum().log()
    zs, zt = student_logits.to(dtype), teacher_logits.detach().to(dtype)
    if logit == "kl":
        sr = F.kl_div(F.log_softmax(zs / t, dim=1), F.log_softmax(zt / t, dim=1), reduction="batchmean",
                      log_target=True) * (t * t)
    else:
        sr = F.mse_loss(zs, zt)
    return alpha * fm + beta * sr
