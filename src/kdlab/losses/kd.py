"""Soft-target knowledge distillation (Hinton, Vinyals & Dean 2015)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._common import LOSSES, check_logit_pair, check_positive


@LOSSES.register("kd")
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Soft-target distillation loss: ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``.

    Source: Hinton, Vinyals & Dean, "Distilling the knowledge in a neural network", 2015
    (section 2). Conventions, stated so that weights mean the same thing everywhere:

    * the KL divergence is summed over the K classes and averaged over the B examples
      (PyTorch's ``reduction='batchmean'``, i.e. the true KL per example, in nats);
    * it is multiplied by ``T^2`` so that the gradient magnitude stays comparable across
      temperatures: ``d loss / d z_s = T * (p_s - p_t) / B`` with ``p = softmax(z / T)``;
    * the teacher logits are detached: the teacher never receives a gradient from this loss.

    The softmaxes are computed in float32 (or float64 for float64 inputs) for stability under
    mixed precision.

    Args:
        student_logits: [B, K] student pre-softmax scores.
        teacher_logits: [B, K] teacher pre-softmax scores (detached inside).
        temperature: T > 0 (Hinton et al. use 1-20; 4 is the usual default in common code).

    Returns:
        A scalar tensor >= 0; 0 iff the two softmax distributions are equal for every example.

    Raises:
        ValueError: if ``temperature`` is not a finite number > 0 (names the value), or the
            logits are not float tensors of equal shape [B, K] (names both shapes).
    """
    t = check_positive(temperature, "temperature")
    check_logit_pair(student_logits, teacher_logits)
    dtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    log_p_s = F.log_softmax(student_logits.to(dtype) / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().to(dtype) / t, dim=1)
    # log_target=True: exact where the teacher puts (numerically) zero mass, no 0 * log 0 NaNs.
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * (t * t)
