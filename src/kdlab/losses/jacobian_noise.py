"""Prop. 1 of Srinivas & Fleuret (ICML 2018) checked on given networks: distillation with input noise
``E_xi ||T(x + xi) - S(x + xi)||^2`` vs the clean loss plus ``sigma^2`` times output-Jacobian matching.

:func:`noisy_expectation` is the Monte-Carlo left-hand side (also the explicit noise-augmentation
alternative to a Jacobian term); :func:`noise_equivalence` compares both sides on a batch.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from kdlab.losses.jacobian import check_sigma, output_jacobian_loss


def noisy_expectation(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma: float,
    n_samples: int = 64,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Monte-Carlo estimate of ``E_xi[fn(x + xi)]``, ``xi = sigma * z``, ``z ~ N(0, I)`` (Prop. 1-2).

    The left-hand side of Prop. 1/2 and eq. 2/3: compare it with the loss at ``x`` plus ``sigma^2``
    times the Jacobian term to check the noise equivalence on a model, or use it as the explicit
    noise-augmentation alternative to a Jacobian term. ``fn`` maps a batch to a scalar loss.

    Args:
        fn: batch ``[B, ...]`` -> scalar tensor.
        x: ``[B, ...]`` clean inputs.
        sigma: noise std >= 0 (input units).
        n_samples: number of noise draws >= 1 (each a full batch).
        generator: optional CPU generator for reproducible draws.

    Returns:
        scalar tensor: the mean of ``fn`` over the draws (differentiable if ``fn`` is).

    Raises:
        ValueError: ``sigma < 0`` or not finite, ``n_samples < 1``.
    """
    sigma = check_sigma(sigma)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    total = None
    for _ in range(n_samples):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        v = fn(x + sigma * z)
        total = v if total is None else total + v
    return total / n_samples


@torch.no_grad()
def _se(s_fn, t_fn, v):
    return (t_fn(v) - s_fn(v)).pow(2).sum(1).mean()


def noise_equivalence(
    student: Callable[[torch.Tensor], torch.Tensor],
    teacher: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma: float,
    n_samples: int = 256,
    generator: Optional[torch.Generator] = None,
) -> dict:
    """Check Prop. 1 on real networks: distillation with input noise vs Jacobian matching.

    Returns floats ``{"noisy": E_xi ||T(x+xi) - S(x+xi)||^2, "clean": ||T(x) - S(x)||^2,
    "jacobian": sum_i ||grad T^i - grad S^i||^2, "predicted": clean + sigma^2 * jacobian,
    "relative_gap": (noisy - predicted) / (sigma^2 * jacobian)}``, each averaged over the batch
    (the gap is relative to the Jacobian term, the quantity Prop. 1 predicts; 0 if that term is 0). The expectation
    uses antithetic pairs ``(xi, -xi)`` (``n_samples`` pairs; unbiased for the symmetric Gaussian,
    and the first-order term cancels exactly), so the gap measures the ``O(sigma^4)`` remainder
    and the Monte-Carlo error of the quadratic term only. Pass networks in eval mode.

    Raises:
        ValueError: ``sigma < 0`` (names it), ``n_samples < 1``.
    """
    check_sigma(sigma)
    x = x.detach()
    noisy = noisy_expectation(
        lambda v: 0.5 * (_se(student, teacher, v) + _se(student, teacher, 2 * x - v)), x, sigma, n_samples, generator
    )
    clean = _se(student, teacher, x)
    jac, *_ = output_jacobian_loss(student, teacher, x, select="full")
    jac = jac.detach()
    predicted = clean + sigma**2 * jac
    return {
        "noisy": float(noisy),
        "clean": float(clean),
        "jacobian": float(jac),
        "predicted": float(predicted),
        "relative_gap": float((noisy - predicted) / (sigma**2 * jac)) if sigma > 0 and float(jac) > 0 else 0.0,
    }


__all__ = ["noisy_expectation", "noise_equivalence"]
