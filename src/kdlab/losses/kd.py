"""Soft-target knowledge distillation (Hinton, Vinyals & Dean 2015)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_float_tensor, check_logit_pair, check_mode, check_positive
from kdlab.ranks import world

#: Reductions of :func:`kd_loss` (the conventions of the frameworks users port configs from).
KD_REDUCTIONS = ("batchmean", "mean", "sum")
#: the epsilon of :func:`standardize_logits` (logit-standardization-KD ``normalize``: ``1e-7 + std``)
LOGIT_STD_EPS = 1e-7


def standardize_logits(logits: torch.Tensor, eps: float = LOGIT_STD_EPS) -> torch.Tensor:
    """Z-score of each row: ``(z - mean_k z) / (eps + std_k z)`` with the unbiased std (K - 1 in the denominator).

    Source: Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024, Algorithm 1 (the Z-score pre-process)
    (``Z(z; tau) = (z - mean(z)) / std(z) / tau``; tau is then the *base* temperature); official code
    sunshangquan/logit-standardization-KD, ``mdistiller/distillers/KD.py``, ``normalize`` (``logit.std``:
    torch's unbiased std; ``1e-7`` added to it). torchdistill ``LogitStdKDLoss.standardize`` is the same.

    Args:
        logits: [B, K] with K >= 2. eps: > 0, added to the std (a constant row gives 0, not NaN).

    Returns:
        [B, K]: every row has mean 0 and unbiased std ``std / (eps + std)`` (~1).

    Raises:
        ValueError: not a float [B, K] tensor, or K < 2 (the std of one logit is undefined).
    """
    check_float_tensor(logits, "logits")
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logit standardisation needs logits [B, K] with K >= 2, got {tuple(logits.shape)}")
    return (logits - logits.mean(dim=-1, keepdim=True)) / (eps + logits.std(dim=-1, keepdim=True))


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0,
            reduction: str = "batchmean", t_squared: bool = True, standardize: bool = False) -> torch.Tensor:
    """Soft-target distillation loss: ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``.

    Source: Hinton, Vinyals & Dean, "Distilling the knowledge in a neural network", 2015
    (section 2). Conventions, stated so that weights mean the same thing everywhere:

    * ``reduction="batchmean"`` (default): the KL divergence is summed over the K classes and averaged
      over the B examples (PyTorch's ``reduction='batchmean'``, i.e. the true KL per example, in nats;
      RepDistiller/mdistiller). ``"mean"``: the pointwise terms ``p_t (log p_t - log p_s)`` averaged over
      all B x K entries (PyTorch's ``reduction='mean'``, used by KD_Lib and some torchdistill configs;
      = batchmean / K). ``"sum"``: summed over everything (= batchmean * B; under DDP with W ranks,
      W times this rank's sum: the global batch's, once DDP averages the ranks);
    * with ``t_squared`` (default) it is multiplied by ``T^2`` so that the gradient magnitude stays
      comparable across temperatures: ``d loss / d z_s = T * (p_s - p_t) / B`` with ``p = softmax(z / T)``
      (batchmean); ``t_squared=False`` drops the factor (frameworks that leave it to the weight);
    * the teacher logits are detached: the teacher never receives a gradient from this loss;
    * ``standardize`` (logit standardisation, Sun et al. CVPR 2024): both logit rows are z-scored first
      (:func:`standardize_logits`), so ``T`` is the paper's base temperature; the official code
      (logit-standardization-KD ``kd_loss`` with ``logit_stand``) keeps the ``T^2`` factor and batchmean.

    The softmaxes are computed in float32 (or float64 for float64 inputs) for stability under
    mixed precision.

    Args:
        student_logits: [B, K] student pre-softmax scores.
        teacher_logits: [B, K] teacher pre-softmax scores (detached inside).
        temperature: T > 0 (Hinton et al. use 1-20; 4 is the usual default in common code).
        reduction: one of :data:`KD_REDUCTIONS`.
        t_squared: multiply by ``T^2``.
        standardize: z-score both logit rows before the softmaxes (needs K >= 2).

    Returns:
        A scalar tensor >= 0; 0 iff the two softmax distributions are equal for every example.

    Raises:
        ValueError: if ``temperature`` is not a finite number > 0 (names the value), the logits are
            not float tensors of equal shape [B, K] (names both shapes), or an unknown ``reduction``.
    """
    t = check_positive(temperature, "temperature")
    check_mode(reduction, KD_REDUCTIONS, "reduction")
    check_logit_pair(student_logits, teacher_logits)
    dtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    z_s, z_t = student_logits.to(dtype), teacher_logits.detach().to(dtype)
    if standardize:
        z_s, z_t = standardize_logits(z_s), standardize_logits(z_t)
    log_p_s = F.log_softmax(z_s / t, dim=1)
    log_p_t = F.log_softmax(z_t / t, dim=1)
    # log_target=True: exact where the teacher puts (numerically) zero mass, no 0 * log 0 NaNs.
    if reduction == "batchmean":
        kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    else:  # torch's own 'mean' is deprecated (to become batchmean): sum, then divide by B x K here
        kl = F.kl_div(log_p_s, log_p_t, reduction="sum", log_target=True)
        # "sum" under DDP: the global batch's sum, W times this rank's (DDP averages the ranks' gradients)
        kl = kl / log_p_s.numel() if reduction == "mean" else kl * world()[0]
    return kl * (t * t) if t_squared else kl
