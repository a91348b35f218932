"""Decoupled knowledge distillation (Zhao, Cui, Song, Qiu & Liang, CVPR 2022)."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_logit_pair, check_positive


def check_labels(labels: torch.Tensor, logits: torch.Tensor) -> None:
    """``labels`` must be an integer tensor [B] with values in [0, K) for logits [B, K].

    Raises:
        ValueError: wrong dtype, shape or range (names them and the logits' shape).
    """
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels must be an integer tensor [B], got {getattr(labels, 'dtype', type(labels).__name__)}")
    b, k = logits.shape
    if labels.shape != (b,):
        raise ValueError(f"labels must have shape [B] = ({b},) for logits {tuple(logits.shape)}; got {tuple(labels.shape)}")
    if b and bool(((labels < 0) | (labels >= k)).any()):
        raise ValueError(f"labels must lie in [0, {k}) for logits {tuple(logits.shape)}; got min {int(labels.min())}, "
                         f"max {int(labels.max())}")


def _split(logits: torch.Tensor, target: torch.Tensor, t: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(log [p_target, p_rest] [B, 2], log_softmax over the K-1 non-target classes [B, K-1]) at temperature t.

    Exact log-space forms: no ``log(1 - p)`` cancellation and no large negative mask (mdistiller
    subtracts 1000 from the target logit; here the target column is removed)."""
    z = logits / t
    b, k = z.shape
    # the non-target columns by gather (no boolean indexing: no host sync on accelerators)
    idx = torch.arange(k - 1, device=z.device).expand(b, k - 1)
    rest = z.gather(1, idx + (idx >= target.unsqueeze(1)).long())
    log_all = torch.logsumexp(z, dim=1, keepdim=True)
    log_target = z.gather(1, target.unsqueeze(1)) - log_all
    log_rest = torch.logsumexp(rest, dim=1, keepdim=True) - log_all
    return torch.cat([log_target, log_rest], dim=1), F.log_softmax(rest, dim=1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, summed over the last dimension (exact where p is 0)."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(1)


def dkd_parts(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              temperature: float = 4.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-example ``(TCKD, NCKD)`` [B] each, plain KLs at temperature T (no T^2, no reduction).

    TCKD = KL(b_t || b_s) with b = [p_y, 1 - p_y]; NCKD = KL(p̂_t || p̂_s) with p̂ the softmax over the K-1
    non-target classes (Zhao et al. 2022, eqs. 1-2). They satisfy
    ``KL(p_t || p_s) = TCKD + (1 - p_y^teacher) * NCKD`` (eqs. 4-5; p_y^teacher the TEACHER's target-class
    probability at T). Teacher detached; errors as :func:`dkd_loss`.
    """
    t = check_positive(temperature, "temperature")
    check_logit_pair(student_logits, teacher_logits)
    check_labels(labels, student_logits)
    if student_logits.shape[1] < 2:
        raise ValueError(f"DKD needs K >= 2 classes; got logits {tuple(student_logits.shape)}")
    dtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    target = labels.long()
    bin_s, rest_s = _split(student_logits.to(dtype), target, t)
    bin_t, rest_t = _split(teacher_logits.detach().to(dtype), target, t)
    return _kl(bin_t, bin_s), _kl(rest_t, rest_s)


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0,
             beta: float = 8.0, temperature: float = 4.0) -> torch.Tensor:
    """Decoupled KD: ``T^2 * (alpha * TCKD + beta * NCKD)``, averaged over the batch.

    Source: Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022. With ``p = softmax(z / T)``,
    ``y`` the label, ``b = [p_y, 1 - p_y]`` (eq. 1) and ``p̂_i = p_i / (1 - p_y)`` for ``i != y`` (eq. 2):

        TCKD = KL(b^T || b^S)  (target class vs the rest)
        NCKD = KL(p̂^T || p̂^S)  (among the non-target classes)
        KD = KL(p^T || p^S) = TCKD + (1 - p_y^T) NCKD  (eqs. 4-5; p_y^T the TEACHER's target probability)
        DKD = alpha * TCKD + beta * NCKD  (eq. 6)

    (Derivation: ``p_i = (1 - p_y) p̂_i`` for ``i != y`` splits each log-ratio of the KL into the
    binary part and the non-target part; the teacher's weights ``p_i^T`` sum to ``1 - p_y^T`` over the
    non-target classes.)

    Conventions (mdistiller's ``dkd_loss``): each KL summed over its classes, multiplied by ``T^2``,
    averaged over the B examples; teacher logits detached; computed in float32 (float64 for float64
    inputs). Defaults alpha 1, beta 8, T 4: mdistiller's CIFAR-100 config (its ImageNet config: alpha 0.5,
    beta 0.5, T 1). The warm-up of the weight (mdistiller: ``min(epoch / 20, 1)``) is the term's
    (:class:`kdlab.terms.dkd.DKDTerm`), not this function's.

    Args:
        student_logits: [B, K] (K >= 2). teacher_logits: [B, K] (detached inside).
        labels: [B] integer class indices in [0, K).
        alpha: TCKD weight >= 0. beta: NCKD weight >= 0. temperature: T > 0.

    Returns:
        A scalar >= 0 (0 when the student's and teacher's softmaxes are equal).

    Raises:
        ValueError: non-positive temperature, negative alpha/beta, logits not float [B, K] of equal
            shapes, K < 2, labels not integer [B] in [0, K) (messages name the values/shapes).
    """
    for name, v in (("alpha", alpha), ("beta", beta)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    t = check_positive(temperature, "temperature")
    tckd, nckd = dkd_parts(student_logits, teacher_logits, labels, t)
    return (alpha * tckd + beta * nckd).mean() * (t * t)
