"""Energy-based variational MI bound of VEM (Kang et al., NeurIPS 2022, secs. 3-4, A.3): short-run
Langevin sampling (eq. 7), the EBM objective (eqs. 5-6 + the squared-energy regulariser of A.3) and the
student's term (eqs. 8-10).

All three take energies or an energy function, never a model class, so any EBM fits
(:mod:`kdlab.models.ebm` has the paper's). ``q_theta(t | s) = exp(-E_theta(t, s)) / Z_theta(s)`` (eq. 4).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from kdlab.losses._common import check_mode
from kdlab.ranks import rank_rows

#: eq. 7's step/noise relation: ``paper`` = ``t <- t - (lambda/2) grad E + N(0, lambda I)`` (noise std
#: sqrt(lambda), tied to the step); ``ports`` = ``t <- t - eta grad E + sigma N(0, I)`` with separate eta
#: and sigma (the public ports and sec. 5.3: sigma 0.005, eta 100, or 50 for Cityscapes/FFHQ).
LANGEVIN_COUPLINGS = ("ports", "paper")
#: defaults: K 10, eta 100, sigma 0.005 of sec. 5.3 (eta 50 on Cityscapes/FFHQ, and in the public ports,
#: ``papers/NOTES.md``); the regulariser weight of the ports
LANGEVIN_STEPS = 10
LANGEVIN_STEP_SIZE = 100.0
LANGEVIN_NOISE = 0.005
ENERGY_REG = 0.05


def langevin(energy: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, steps: int = LANGEVIN_STEPS,
             step_size: float = LANGEVIN_STEP_SIZE, noise: float = LANGEVIN_NOISE, coupling: str = "ports",
             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Short-run Langevin dynamics (VEM eq. 7; Nijkamp et al. 2019) from ``x0``, ``steps`` = K steps.

    ``coupling="ports"``: ``x_k = x_{k-1} - step_size * grad_x sum_b E(x_{k-1})_b + noise * eps``;
    ``coupling="paper"``: ``x_k = x_{k-1} - (step_size / 2) * grad + sqrt(step_size) * eps`` (eq. 7 with
    lambda = ``step_size``; ``noise`` is not used), which samples ``exp(-E)`` as K -> inf, lambda -> 0.
    ``eps ~ N(0, I)``. Each step is one forward and one backward of ``energy`` with respect to x only
    (no parameter gradients are accumulated). Runs with gradients enabled even inside ``no_grad``.

    The gradient of the batch SUM is each sample's own gradient as long as ``energy`` treats samples
    independently (no batch statistics: the EBMs of :mod:`kdlab.models.ebm` have none).

    Args:
        energy: x [B, ...] -> energies [B] (e.g. ``lambda x: ebm(x, s)`` for VEM: q(t | s), s fixed).
        x0: the chain's start [B, ...] (VEM, sec. 4.1.3: the student's output); detached inside.
        steps: K >= 1. step_size: eta (ports) or lambda (paper) > 0. noise: sigma >= 0 (ports).
        coupling: one of :data:`LANGEVIN_COUPLINGS`.
        generator: optional ``torch.Generator`` for the noise (reproducible chains).

    Returns:
        x_K, detached, same shape/dtype/device as ``x0``.

    Raises:
        ValueError: K < 1, step_size <= 0, noise < 0, an unknown coupling, or an energy that is not [B].
    """
    check_mode(coupling, LANGEVIN_COUPLINGS, "Langevin coupling")
    if int(steps) < 1:
        raise ValueError(f"Langevin steps K = {steps} must be >= 1")
    if not step_size > 0:
        raise ValueError(f"Langevin step size = {step_size} must be > 0")
    if not noise >= 0:
        raise ValueError(f"Langevin noise = {noise} must be >= 0")
    if coupling == "paper":
        drift, sigma = step_size / 2.0, step_size ** 0.5
    else:
        drift, sigma = step_size, noise
    x = x0.detach()
    with torch.enable_grad():
        for _ in range(int(steps)):
            x = x.detach().requires_grad_(True)
            e = energy(x)
            if e.shape != x.shape[:1]:
                raise ValueError(f"the energy must give one value per sample, shape [{x.shape[0]}]; got {tuple(e.shape)}")
            (grad,) = torch.autograd.grad(e.sum(), x)
            x = x.detach() - drift * grad
            if sigma > 0:
                x = x + sigma * rank_rows(lambda n: torch.randn((n, *x.shape[1:]), generator=generator, device=x.device,
                                                                dtype=x.dtype), x.shape[0])
    return x.detach()


def ebm_loss(e_data: torch.Tensor, e_sample: torch.Tensor, reg: float = ENERGY_REG) -> torch.Tensor:
    """The EBM's objective (VEM eqs. 5-6 and A.3): ``mean E(t, s) - mean E(t~, s) + reg * mean(E(t, s)^2 + E(t~, s)^2)``.

    Its gradient in theta is eq. 6, the gradient of ``E_{s,t}[-log q_theta(t | s)]`` with the partition
    function's term estimated by the Langevin samples t~ ~ q_theta(. | s); minimising it lowers the
    energy of the teacher's outputs and raises that of the samples. ``reg`` weights the squared-energy
    regulariser of A.3 (the ports: 0.05), which keeps the unbounded energy near 0.

    Args:
        e_data: E(t, s) [B] for the (teacher output, student output) pairs (s detached by the caller).
        e_sample: E(t~, s) [B] for the Langevin samples.
        reg: >= 0.

    Returns:
        A scalar.

    Raises:
        ValueError: shapes differ, or ``reg`` < 0.
    """
    if e_data.shape != e_sample.shape:
        raise ValueError(f"e_data {tuple(e_data.shape)} and e_sample {tuple(e_sample.shape)} must have one shape")
    if not reg >= 0:
        raise ValueError(f"energy regulariser weight = {reg} must be >= 0")
    return e_data.mean() - e_sample.mean() + reg * (e_data.pow(2).mean() + e_sample.pow(2).mean())


def vem_student_loss(e_data: torch.Tensor, e_sample: torch.Tensor) -> torch.Tensor:
    """The student's VEM term (eqs. 8-10): ``mean E(t, s) - mean E(t~, s)``, t~ detached Langevin samples.

    Its gradient in the student's parameters (through s only) is eq. 9, the gradient of
    ``E[-log q_theta(t | s)] = -(I~(T; S) - H(T))``; so minimising ``lambda_MI`` times it maximises the
    variational lower bound ``I~`` of eq. 2, as ``L^s = L_algo - lambda_MI I~`` (eq. 10) asks. The
    teacher output t and the samples t~ must carry no gradient (the caller detaches them).

    Args:
        e_data: E(t, s) [B] with s carrying the student's graph. e_sample: E(t~, s) [B], same s.

    Raises:
        ValueError: shapes differ.
    """
    if e_data.shape != e_sample.shape:
        raise ValueError(f"e_data {tuple(e_data.shape)} and e_sample {tuple(e_sample.shape)} must have one shape")
    return e_data.mean() - e_sample.mean()
