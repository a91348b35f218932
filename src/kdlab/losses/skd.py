"""Streamlined Knowledge Distillation (SKD; Jeong, Lee & Choi, CVPR 2026): the instance and direction losses.

Two forms of each, ``mode``:

* ``paper``: the formulas as torchdistill states them from the paper (``torchdistill/losses/mid_level.py``,
  ``SKDInstanceLoss``: ``KL(softmax(z_t / tau) || softmax(z_s / tau))``, batchmean, no ``tau^2``;
  ``SKDDirectionLoss``: ``mean_i sqrt(D_i^T Sigma'^{-1} D_i)`` with ``D = G_s - G_t`` the difference of the
  Gram matrices of the L2-normalised logits and ``Sigma' = cov(D) + lambda I``);
* ``code``: the authors' public code (mdistiller-style ``distillers/SKD.py``: ``kd_loss``, ``SKD_loss``,
  ``SKD.forward_train``), which differs in three places: the instance loss has the ``tau^2`` factor; the Gram
  matrices are divided by the number of classes C; and each loss is multiplied by a mask and averaged,
  ``(loss * mask).mean()``, where the loss is already a batch scalar, so the mask does not select examples
  but scales the loss by the share of True entries: for the instance loss the examples whose teacher
  confidence ``max_k p_t`` is at most its batch median (``np.percentile(., 50)``), for the direction loss the
  classes whose summed teacher probability is at most its median over classes. The code weights both
  losses 0.5 (``kd``) beside CE 0.5, with ``tau = 4``, ``lambda = 0.1``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_logit_pair, check_mode, check_positive
from kdlab.losses.kd import kd_loss

SKD_MODES = ("paper", "code")


def _median_share(values: torch.Tensor) -> torch.Tensor:
    """Share of ``values`` (1-D) that are <= their median as ``np.percentile(values, 50)`` computes it (linear
    interpolation between the two middle values for an even count), as a 0-dim tensor of ``values``' dtype."""
    return (values <= torch.quantile(values, 0.5, interpolation="linear")).to(values.dtype).mean()


def skd_instance_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0,
                      mode: str = "paper") -> torch.Tensor:
    """SKD's instance loss ``L_INS``: the softened KL of each example, averaged over the batch.

    ``paper``: ``KL(softmax(z_t / tau) || softmax(z_s / tau))`` batchmean (torchdistill ``SKDInstanceLoss``);
    ``code``: ``tau^2`` times that, times the share of examples whose teacher confidence is at most the batch
    median (the authors' ``kd_loss(...) * mask).mean()``). See the module docstring for the sources.

    Args:
        student_logits, teacher_logits: [B, K] (teacher detached). temperature: tau > 0 (code: 4).
        mode: one of :data:`SKD_MODES`.

    Returns:
        Scalar >= 0, 0 iff the softened distributions agree on every example.

    Raises:
        ValueError: logits of different shapes or not [B, K], tau not > 0, unknown mode.
    """
    check_mode(mode, SKD_MODES, "mode")
    tau = check_positive(temperature, "temperature")
    loss = kd_loss(student_logits, teacher_logits, tau, t_squared=mode == "code")
    if mode == "paper":
        return loss
    with torch.no_grad():
        confidence = F.softmax(teacher_logits.detach().to(loss.dtype), dim=1).max(dim=1).values
    return loss * _median_share(confidence)


def skd_direction_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tikhonov: float = 0.1,
                       mode: str = "paper") -> torch.Tensor:
    """SKD's direction loss ``L_DIR``: the mean Mahalanobis norm of the rows of the Gram-matrix difference.

    ``N = z / ||z||_2`` per row, ``G = N N^T`` [B, B] (``code``: ``/ K``), ``D = G_s - G_t``,
    ``Sigma' = cov(D) + lambda I`` (``torch.cov(D.T)``: the B columns of D are the variables, its rows the
    observations), ``L = mean_i sqrt(D_i Sigma'^{-1} D_i^T)``; ``code`` multiplies by the share of classes whose
    summed teacher probability over the batch is at most its median. ``Sigma'`` is built from D with its
    gradient (as both codes do); the inverse via Cholesky. Each squared norm is floored at 1e-24 before the
    square root (the codes take it bare: a zero row would give a NaN gradient); the value moves by <= 1e-12.

    Args:
        student_logits, teacher_logits: [B, K], B >= 2 (teacher detached). tikhonov: lambda > 0 (code: 0.1).
        mode: one of :data:`SKD_MODES`.

    Returns:
        Scalar >= 0, (up to the 1e-12 floor) 0 when the two Gram matrices agree (e.g. the student's logits a positive multiple of the
        teacher's, row by row). Computed in float64 for float64 inputs, else float32.

    Raises:
        ValueError: logits of different shapes or not [B, K], B < 2, lambda not > 0, unknown mode.
    """
    check_mode(mode, SKD_MODES, "mode")
    lam = check_positive(tikhonov, "tikhonov")
    check_logit_pair(student_logits, teacher_logits)
    b, k = student_logits.shape
    if b < 2:
        raise ValueError(f"the direction loss needs a batch of >= 2 examples (a covariance over them); got {b}")
    dtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    n_s = F.normalize(student_logits.to(dtype), p=2.0, dim=1)
    n_t = F.normalize(teacher_logits.detach().to(dtype), p=2.0, dim=1)
    scale = 1.0 / k if mode == "code" else 1.0
    diff = (n_s @ n_s.t() - n_t @ n_t.t()) * scale
    cov = torch.cov(diff.t()) + lam * torch.eye(b, dtype=dtype, device=diff.device)
    inv = torch.cholesky_inverse(torch.linalg.cholesky(cov))
    # clamp: sqrt'(0) is infinite, and a row of D equal to 0 (student agrees) would give a NaN gradient
    loss = torch.einsum("bi,ij,bj->b", diff, inv, diff).clamp_min(1e-24).sqrt().mean()
    if mode == "paper":
        return loss
    with torch.no_grad():
        class_mass = F.softmax(teacher_logits.detach().to(dtype), dim=1).sum(dim=0)
    return loss * _median_share(class_mass)
