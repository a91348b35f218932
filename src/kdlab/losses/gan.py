"""GAN losses: the non-saturating BCE game, the WGAN critic (+ gradient penalty) and the
student-generator regression of GAN compression by distillation.

Aguinaldo et al. 2019 (``papers/001``): eq. (1) is the minimax GAN, eq. (2) the WGAN objective;
Fig. 3 / eq. (3) the MSE student, Fig. 4 / eq. (4) the joint MSE + adversarial student (the
fragment shows neither equation: the forms below follow the figures and the public reproduction
in ``papers/NOTES.md``, with the two weights named separately).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_float_tensor
from kdlab.ranks import rank_rows


def _check_scores(x: torch.Tensor, name: str) -> None:
    check_float_tensor(x, name)
    if x.dim() != 1:
        raise ValueError(f"{name} must be one score per image, shape [B], got {tuple(x.shape)}")


def bce_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss of the standard GAN, paper eq. (1) (Goodfellow et al. 2014), as a minimisation:

    ``L_D = -mean_i log sigmoid(D(x_i)) - mean_j log(1 - sigmoid(D(G(z_j))))``

    = BCE-with-logits with target 1 for real and 0 for fake, each term averaged over its own batch
    and the two summed (DCGAN's reference code sums the two means).

    Args:
        real_logits: [B_r] logits of real images. fake_logits: [B_f] logits of generated images.

    Returns: scalar >= 0 (nats).
    Raises: ValueError: not float tensors of shape [B].
    """
    _check_scores(real_logits, "real_logits")
    _check_scores(fake_logits, "fake_logits")
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def bce_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss (Goodfellow et al. 2014 sec. 3): ``L_G = -mean_j log sigmoid(D(G(z_j)))``.

    Used in place of minimising ``log(1 - D(G(z)))`` of eq. (1), which saturates early in training.

    Args: fake_logits: [B] discriminator logits of generated images. Returns: scalar >= 0.
    """
    _check_scores(fake_logits, "fake_logits")
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def wgan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss, paper eq. (2) as a minimisation: ``L_D = mean D(G(z)) - mean D(x)``.

    The Lipschitz constraint is not in the loss: clip the weights (Arjovsky et al. 2017) or add
    :func:`gradient_penalty` (Gulrajani et al. 2017). Args: [B_r], [B_f] critic values. Returns: scalar.
    """
    _check_scores(real_scores, "real_scores")
    _check_scores(fake_scores, "fake_scores")
    return fake_scores.mean() - real_scores.mean()


def hinge_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Hinge critic loss of SAGAN (Zhang et al. 2019 eq. 3; Lim & Ye 2017):
    ``L_D = mean relu(1 - D(x)) + mean relu(1 + D(G(z)))``. The generator's loss is ``-mean D(G(z))``
    (:func:`wgan_generator_loss`). Args: [B_r], [B_f] critic values. Returns: scalar >= 0."""
    _check_scores(real_scores, "real_scores")
    _check_scores(fake_scores, "fake_scores")
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def wgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss: ``L_G = -mean D(G(z))``. Args: [B] critic values. Returns: scalar."""
    _check_scores(fake_scores, "fake_scores")
    return -fake_scores.mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator = None) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017, eq. 3): ``mean_i (||grad_x D(x_hat_i)||_2 - 1)^2`` with
    ``x_hat = eps * real + (1 - eps) * fake``, ``eps ~ U[0, 1]`` per image.

    The gradient is taken with ``create_graph=True`` so the penalty trains the critic. Multiply it by
    the penalty weight (10 in the paper and in the public GAN-compression reproduction).

    Args:
        critic: ``[B, C, H, W] -> [B]``. real, fake: ``[B, C, H, W]`` of equal shape (fake is detached inside).

    Returns: scalar >= 0. Raises: ValueError: shapes differ (names both).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake batches must have equal shapes, got {tuple(real.shape)} and {tuple(fake.shape)}")
    eps = rank_rows(lambda n: torch.rand(n, 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator), real.shape[0])
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def generator_mse(student_images: torch.Tensor, teacher_images: torch.Tensor) -> torch.Tensor:
    """Student-teacher image regression, paper Fig. 3 / eq. (3):

    ``L_MSE = 1/(B C H W) sum_{b,c,h,w} (G_s(z)_{bchw} - G_t(z)_{bchw})^2``

    for the same latent batch z (the mean over every element, PyTorch's ``mse_loss`` default; the
    paper does not give the reduction: the elementwise mean keeps the weight independent of image
    size). The teacher images are detached: the frozen teacher never receives a gradient.

    Args: student_images, teacher_images: [B, C, H, W] of equal shape (in the generators' [-1, 1] range).
    Returns: scalar >= 0, 0 iff the images are equal.
    Raises: ValueError: shapes differ (names both) or not float tensors.
    """
    check_float_tensor(student_images, "student_images")
    check_float_tensor(teacher_images, "teacher_images")
    if student_images.shape != teacher_images.shape:
        raise ValueError(
            f"student and teacher images must have the same shape; got student {tuple(student_images.shape)} "
            f"and teacher {tuple(teacher_images.shape)}"
        )
    return F.mse_loss(student_images, teacher_images.detach())


def joint_student_loss(student_images: torch.Tensor, teacher_images: torch.Tensor, adversarial: torch.Tensor,
                       mse_weight: float, adv_weight: float):
    """Joint student loss, paper Fig. 4 / eq. (4): ``L = mse_weight * L_MSE + adv_weight * L_adv``.

    ``L_adv`` is the generator loss of the chosen game on the student's samples (``-mean D(G_s(z))``
    for WGAN, the non-saturating BCE for the standard GAN). The public reproduction writes
    ``-(1 - a) D(G_s(z)) + a * MSE`` with ``a = 0.3`` (= ``adv_weight 0.7, mse_weight 0.3``); there
    ``a = 0`` silently drops the MSE term, so kdlab names the two weights separately and a weight of 0
    means exactly that the term is off.

    Returns: ``(total, mse, adversarial)`` scalars (the last two unweighted).
    """
    mse = generator_mse(student_images, teacher_images)
    return mse_weight * mse + adv_weight * adversarial, mse, adversarial
