"""Logit (pre-softmax activation) matching (Ba & Caruana 2014; Jacobian paper section 10.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_logit_pair, check_mode

LOGIT_MODES = ("paper", "mse")


def logit_matching(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mode: str = "paper") -> torch.Tensor:
    """Squared error between student and teacher logits ('match activations').

    Source: Ba & Caruana, "Do deep nets really need to be deep?", 2014; Srinivas & Fleuret,
    "Knowledge transfer with Jacobian matching", 2018, section 10.2: "'Match Activations' refers
    to squared error term over pre-softmax activations of the form (y_s - y_t)^2".

    * ``mode='paper'``: ``(1/B) sum_b ||y_s,b - y_t,b||_2^2`` -- squared L2 norm over the K
      classes, averaged over the batch.
    * ``mode='mse'``: ``(1/(B*K)) sum_{b,k} (y_s,bk - y_t,bk)^2`` -- ``F.mse_loss``'s elementwise
      mean, as most public code does. It equals ``paper / K``.

    The teacher logits are detached.

    Args:
        student_logits: [B, K] student pre-softmax scores.
        teacher_logits: [B, K] teacher pre-softmax scores.
        mode: ``'paper'`` or ``'mse'`` (see above).

    Returns:
        A scalar tensor >= 0 (squared logit units).

    Raises:
        ValueError: unknown ``mode`` (lists the accepted ones), or logits that are not float
            tensors of equal shape [B, K] (names both shapes).
    """
    check_mode(mode, LOGIT_MODES)
    check_logit_pair(student_logits, teacher_logits)
    teacher = teacher_logits.detach()
    if mode == "mse":
        return F.mse_loss(student_logits, teacher.to(student_logits.dtype))
    diff = student_logits - teacher.to(student_logits.dtype)
    return diff.pow(2).sum(dim=1).mean()
