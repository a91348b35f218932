"""CAGC's content-aware (masked) distillation (Liu et al. 2021, content-aware GAN compression; VEM paper
appendix A.2.5, eqs. 24-27).

``L_algo = L_GAN + lambda_recon L_recon^mask + lambda_distill L_distill^mask + lambda_LPIPS L_LPIPS^mask``
(eq. 24). ``M`` is a binary mask of the pixels on the object of interest. CAGC takes it from a pretrained
face-parsing network applied to the teacher's image; that network is not available here, so the mask
comes from a pluggable ``saliency`` function of the teacher image, by default :func:`foreground_saliency`
(pixels that differ from the image's border background), documented below.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_float_tensor, check_positive, layer_pairs_checked
from kdlab.losses.image import FeatureFn, check_image_pair, lpips_distance, reduce_per_example
from kdlab.registry import Registry

#: A saliency function: the teacher image [B, C, H, W] -> a mask [B, 1, H, W] (or [B, C, H, W]) in [0, 1].
SaliencyFn = Callable[[torch.Tensor], torch.Tensor]

#: Saliency functions by name (``loss.terms.cagc.saliency``): ``f(image [B, C, H, W] in [-1, 1]) -> mask``.
#: A new one is ``@SALIENCY.register("name")`` on a function of the image alone.
SALIENCY = Registry("saliency function")


def foreground_saliency(image: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """The default mask: 1 where a pixel differs from the background, estimated from the image border.

    Per image and channel the background is the median of the border pixels (outermost rows and
    columns); a pixel's deviation is the channel mean of ``|x - background|``; the mask is
    ``deviation > threshold * max deviation of that image``. Suits objects on a plain background (the
    Fashion-MNIST / edges -> image tasks, centred faces); a constant image gives an all-zeros mask.

    Args:
        image: [B, C, H, W] float. threshold: in (0, 1).

    Returns:
        Binary float mask [B, 1, H, W] (no graph).
    """
    check_float_tensor(image, "image")
    if image.dim() != 4:
        raise ValueError(f"foreground_saliency expects images [B, C, H, W], got shape {tuple(image.shape)}")
    if not 0 < float(threshold) < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    x = image.detach()
    border = torch.cat([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], dim=2)  # [B, C, 2H+2W]
    background = border.median(dim=2).values[:, :, None, None]
    dev = (x - background).abs().mean(1, keepdim=True)
    peak = dev.flatten(1).max(1).values[:, None, None, None]
    return (dev > threshold * peak).to(x.dtype)


SALIENCY.add("foreground", foreground_saliency,
             help="pixels that differ from the image's border background (objects on a plain background)")


@SALIENCY.register("ones", help="every pixel (M = 1: the unmasked losses)")
def all_pixels(image: torch.Tensor) -> torch.Tensor:
    """``M = 1`` everywhere, [B, 1, H, W]: eqs. 25-27 become the unmasked reconstruction/distillation/LPIPS."""
    check_float_tensor(image, "image")
    return image.new_ones(image.shape[0], 1, *image.shape[2:])


def content_mask(teacher_image: torch.Tensor, saliency: SaliencyFn = foreground_saliency) -> torch.Tensor:
    """``M`` of eqs. 25-27: ``saliency(G^t(x))`` computed without a graph, checked.

    Raises:
        ValueError: the saliency function returned something other than a float tensor [B, 1, H, W] or
            [B, C, H, W] matching the image (names both shapes), or values outside [0, 1].
    """
    check_float_tensor(teacher_image, "teacher_image")
    with torch.no_grad():
        mask = saliency(teacher_image.detach())
    b, c, h, w = teacher_image.shape
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[0] != b or mask.shape[1] not in (1, c) \
            or tuple(mask.shape[2:]) != (h, w):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"the saliency function must return a mask [{b}, 1, {h}, {w}] (or [{b}, {c}, {h}, {w}]) "
                         f"for the image {tuple(teacher_image.shape)}; got {got}")
    mask = mask.to(teacher_image.dtype)
    if mask.numel() and (mask.min() < 0 or mask.max() > 1):
        raise ValueError(f"the mask must lie in [0, 1]; got values in [{mask.min().item()}, {mask.max().item()}]")
    return mask


def _check_mask(mask: torch.Tensor, like: torch.Tensor, what: str) -> None:
    check_float_tensor(mask, "mask")
    if mask.dim() != 4 or mask.shape[0] != like.shape[0] or mask.shape[1] not in (1, like.shape[1]):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit the {what} {tuple(like.shape)}: "
                         "need [B, 1, H, W] or [B, C, H, W]")


def resize_mask(mask: torch.Tensor, size) -> torch.Tensor:
    """The mask at a feature map's spatial ``size`` (nearest neighbour: a binary mask stays binary)."""
    size = tuple(int(v) for v in size)
    return mask if tuple(mask.shape[2:]) == size else F.interpolate(mask, size=size, mode="nearest")


def masked_reconstruction_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                               reduction: str = "sum") -> torch.Tensor:
    """Eq. 25: ``E_x ||M (.) (G^s(x) - G^t(x))||_{1,1}``.

    ``reduction="sum"`` (the equation): per-example sum, batch mean; ``"mean"``: over all elements (the
    sum divided by C*H*W, not by the mask's area). With ``M = 1`` it equals
    :func:`kdlab.losses.image.l1_reconstruction`; with ``M = 0`` it is 0. Teacher detached.

    Args:
        student, teacher: [B, C, H, W]. mask: [B, 1, H, W] or [B, C, H, W] (e.g. :func:`content_mask`).

    Raises:
        ValueError: image shapes differ (names both) or a mask that does not fit them (names both).
    """
    check_image_pair(student, teacher)
    _check_mask(mask, student, "images")
    if tuple(mask.shape[2:]) != tuple(student.shape[2:]):
        raise ValueError(f"mask {tuple(mask.shape)} and images {tuple(student.shape)} differ in size")
    diff = mask.detach().to(student.dtype) * (student - teacher.detach().to(student.dtype))
    return reduce_per_example(diff.abs(), reduction)


def masked_distillation_loss(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor],
                             mask: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Eq. 26: ``sum_l E_x ||M (.) (f_l(G_l^s(x)) - G_l^t(x))||_{1,1}`` (an L1 distance, as the equation).

    ``students`` are the maps after their 1x1 adapters ``f_l``
    (:class:`kdlab.losses.gan_compression_distill.Conv1x1Adapters`). The image mask is resized to each
    map's H x W by nearest neighbour (:func:`resize_mask`) and broadcast over the map's channels, so it must
    have one channel [B, 1, H, W]. Reductions as :func:`masked_reconstruction_loss`. Teacher maps detached.

    Raises:
        ValueError: lists of different or zero length, a pair of different shapes, or a bad mask (names
            the layer and the shapes).
    """
    pairs = layer_pairs_checked(students, teachers)
    check_float_tensor(mask, "mask")
    if mask.dim() != 4 or mask.shape[1] != 1:  # the maps' channels differ from the image's
        raise ValueError(f"a feature mask must be [B, 1, H, W]; got {tuple(mask.shape)}")
    total = None
    for k, (s, t) in enumerate(pairs):
        check_image_pair(s, t, f"features (layer {k})")
        _check_mask(mask, s, f"feature (layer {k})")
        m = resize_mask(mask.detach().to(s.dtype), s.shape[2:])
        term = reduce_per_example((m * (s - t.detach().to(s.dtype))).abs(), reduction)
        total = term if total is None else total + term
    return total


def masked_perceptual_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, features: FeatureFn,
                           layer_weights=None, eps: float = 1e-10) -> torch.Tensor:
    """Eq. 27: ``E_x LPIPS(M (.) G^s(x), M (.) G^t(x))`` with the LPIPS form of
    :func:`kdlab.losses.image.lpips_distance` on the pluggable ``features`` network.

    With ``M = 1`` it equals ``lpips_distance(student, teacher, features)``; with ``M = 0`` both inputs
    are zero images and the distance is 0.

    Raises:
        ValueError: image shapes differ (names both) or a mask that does not fit them.
    """
    check_image_pair(student, teacher)
    _check_mask(mask, student, "images")
    if tuple(mask.shape[2:]) != tuple(student.shape[2:]):
        raise ValueError(f"mask {tuple(mask.shape)} and images {tuple(student.shape)} differ in size")
    eps = check_positive(eps, "eps")
    m = mask.detach().to(student.dtype)
    return lpips_distance(m * student, m * teacher.detach().to(student.dtype), features, layer_weights, eps)
