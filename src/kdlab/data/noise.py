"""Gaussian input corruption for robustness tests."""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch


def add_gaussian_noise(
    x: torch.Tensor, sigma: float, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Return ``x + sigma * eps`` with ``eps ~ N(0, I)`` of the shape of ``x``.

    ``sigma`` is in normalised input units (the inputs are already ``(pixel - mean) / std``), the
    protocol of the Jacobian-matching paper (Srinivas & Fleuret 2018, Table 2: accuracy under
    additive Gaussian noise of increasing sigma). The result is not clipped.

    Args:
        x: float tensor of any shape, e.g. [B, C, H, W] normalised images.
        sigma: noise standard deviation, >= 0 and finite. 0 returns ``x`` itself (no copy).
        generator: optional ``torch.Generator`` for reproducible noise; it may live on another device
            than ``x`` (the noise is then drawn there and moved).

    Returns:
        Tensor like ``x`` (same shape, dtype, device).

    Raises:
        ValueError: ``sigma`` < 0, NaN/inf or not a number; ``x`` not floating point.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not math.isfinite(float(sigma)):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    sigma = float(sigma)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0.0:
        return x
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    device = generator.device if generator is not None else x.device
    eps = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return x + sigma * eps.to(x.device)
