"""Losses of the image-to-image teachers: Pix2Pix (Isola et al. 2017) and CycleGAN (Zhu et al. 2017),
the "standard method of the corresponding GAN algorithm" that trains the VEM paper's teachers
(``papers/003`` eq. 11: ``min_G max_D L_GAN + lambda_rec L_rec``).

Conventions (those of the public pix2pix/CycleGAN implementation, ``GANLoss``):

* a discriminator output is a score map ``[B, 1, h, w]`` (PatchGAN: one score per receptive field) or
  ``[B]``; every loss averages over all its elements;
* ``mode = 'vanilla'``: binary cross-entropy on logits (Pix2Pix); ``'lsgan'``: least squares with
  targets 1 (real) and 0 (fake) (Mao et al. 2017; CycleGAN);
* the discriminator's loss is ``0.5 * (l(D(real), 1) + l(D(fake), 0))``: the 1/2 slows D relative to G
  (pix2pix sec. 3.3 "we divide the objective by 2 while optimizing D");
* the generator's adversarial term is ``l(D(G(x)), 1)`` (non-saturating);
* reconstruction, cycle and identity terms are L1 means over every element of the images (in the
  generators' [-1, 1] units): :func:`kdlab.losses.l1_reconstruction` with ``reduction="mean"``.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_float_tensor, check_mode
from kdlab.losses.image import l1_reconstruction

GAN_MODES = ("vanilla", "lsgan")
"""Adversarial losses on score maps: BCE on logits (Pix2Pix) or least squares (CycleGAN)."""


def _against(scores: torch.Tensor, target: float, mode: str) -> torch.Tensor:
    check_float_tensor(scores, "scores")
    check_mode(mode, GAN_MODES, "mode")
    want = torch.full_like(scores, float(target))
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(scores, want)
    return F.mse_loss(scores, want)


def map_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor, mode: str = "vanilla") -> torch.Tensor:
    """``L_D = 0.5 * (l(D(real), 1) + l(D(fake), 0))``, each ``l`` averaged over its map (see module doc).

    Args:
        real_scores, fake_scores: discriminator outputs ``[B, 1, h, w]`` (or ``[B]``) of real and generated
            images (the generated ones detached by the caller).
        mode: ``vanilla`` | ``lsgan``.

    Returns: scalar >= 0. Raises: ValueError: unknown mode (lists both), non-float scores.
    """
    return 0.5 * (_against(real_scores, 1.0, mode) + _against(fake_scores, 0.0, mode))


def map_generator_loss(fake_scores: torch.Tensor, mode: str = "vanilla") -> torch.Tensor:
    """The generator's adversarial term ``l(D(G(x)), 1)`` (non-saturating), averaged over the map. Scalar >= 0."""
    return _against(fake_scores, 1.0, mode)


def cycle_consistency_loss(real: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """CycleGAN's cycle loss for one direction (Zhu et al. eq. 2): ``E ||F(G(x)) - x||_1`` as the mean absolute
    error over all elements between the input ``real`` and its round trip ``reconstructed`` [B, C, H, W]
    (:func:`kdlab.losses.l1_reconstruction`, ``reduction="mean"``). 0 for generators that are inverses."""
    return l1_reconstruction(reconstructed, real, reduction="mean")


def identity_loss(real: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
    """CycleGAN's identity loss (Zhu et al. sec. 5.2, Taigman et al. 2017): ``E ||G(y) - y||_1`` for ``y`` of
    G's output domain, the mean absolute error over all elements (needs equal channels in both domains)."""
    return l1_reconstruction(mapped, real, reduction="mean")


def pix2pix_generator_loss(fake_scores: torch.Tensor, fake: torch.Tensor, target: torch.Tensor,
                           lambda_rec: float = 100.0, mode: str = "vanilla") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VEM eq. 11 for the generator: ``L_GAN(G) + lambda_rec * L_rec`` (Pix2Pix eq. 4, lambda = 100), with
    ``L_rec = E ||y - G(x)||_1`` as the mean absolute error over all elements of ``fake``/``target``
    ``[B, C, H, W]`` in [-1, 1] (the pix2pix code's ``L1Loss``, whose lambda assumes it).

    Returns: ``(total, adversarial, reconstruction)`` scalars (the last two unweighted).
    """
    adv = map_generator_loss(fake_scores, mode)
    rec = l1_reconstruction(fake, target, reduction="mean")
    return adv + float(lambda_rec) * rec, adv, rec
