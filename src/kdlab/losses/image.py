"""Image-space distances shared by the image-to-image GAN compression algorithms (VEM paper, appendix A.2).

* :func:`l1_reconstruction`: ``E_x ||G^s(x) - y||_{1,1}`` (eqs. 11, 15, 17, 20);
* :func:`ssim_loss`: ``1 - SSIM`` (OMGD's structural similarity loss, eq. 15; Wang et al. 2004), computed
  by ``torchmetrics.functional.structural_similarity_index_measure``;
* :func:`total_variation`: the TV regulariser of OMGD (eq. 12);
* :func:`perceptual_loss`: feature reconstruction loss (Johnson et al. 2016; OMGD eq. 15) on a pluggable
  feature network ``features(x) -> list of tensors``, squared (Johnson et al.) or absolute (OMGD's code);
* OMGD's style loss on the same kind of network is :func:`kdlab.losses.omgd.style_loss`;
* :func:`lpips_distance`: the LPIPS form (Zhang et al. 2018; CAGC eq. 27) on the same kind of network.

Reductions: ``"sum"`` is the papers' ``E_x ||.||_{1,1}`` (or ``||.||_F^2``): the elements of each example
summed, the batch averaged; ``"mean"`` averages over every element (``F.l1_loss`` / ``F.mse_loss``, the
convention of the pix2pix / GAN-Compression code, whose lambda values assume it): ``"sum"`` divided by the
number of elements per example. Teacher/target tensors are always detached inside.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from kdlab.losses._common import check_float_tensor, check_mode, check_positive
from kdlab.ranks import world

REDUCTIONS = ("sum", "mean")
TV_NORMS = ("l1", "l2")
#: TV only: ``batch_sum`` sums over the whole batch, as OMGD's ``backward_G_student`` (``torch.sum`` of the differences)
TV_REDUCTIONS = REDUCTIONS + ("batch_sum",)
#: ``form`` of the SSIM loss: torchmetrics' on images mapped to [0, 1] | OMGD's pytorch_ssim on the raw values
SSIM_FORMS = ("unit", "omgd")
#: distance of the perceptual loss per feature element: squared (Johnson et al. eq. 2) or absolute (OMGD's code)
FEATURE_DISTANCES = ("mse", "l1")

#: A perceptual feature network: an image batch [B, C, H, W] -> a list of feature tensors [B, ...].
FeatureFn = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def check_image_pair(student: torch.Tensor, teacher: torch.Tensor, what: str = "images") -> None:
    """Both float tensors [B, C, H, W] of one shape; the error names both shapes and ``what``."""
    check_float_tensor(student, f"student {what}")
    check_float_tensor(teacher, f"teacher {what}")
    if student.dim() != 4 or student.shape != teacher.shape:
        raise ValueError(f"student and teacher {what} must have the same shape [B, C, H, W]; got student "
                         f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}")


def reduce_per_example(values: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """``values`` [B, ...] -> scalar: ``sum`` over each example then mean over B, or ``mean`` over all."""
    check_mode(reduction, REDUCTIONS, "reduction")
    if reduction == "mean":
        return values.mean()
    return values.flatten(1).sum(1).mean()


def l1_reconstruction(student: torch.Tensor, target: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """L1 reconstruction ``E_x ||G^s(x) - y||_{1,1}`` (VEM paper eqs. 11, 15, 17, 20).

    ``||.||_{1,1}`` sums the absolute values of all elements (the paper's definition under eq. 15); ``y``
    is the ground truth (paired data, eq. 20 first case) or the teacher's output (eqs. 15, 17, 20 second
    case). ``reduction="sum"`` (default) is that sum per example averaged over the batch; ``"mean"`` is the
    per-element mean of the published code (the sum divided by C*H*W).

    Args:
        student: [B, C, H, W] student output. target: same shape; detached.
        reduction: ``"sum"`` or ``"mean"``.

    Returns:
        Scalar >= 0; 0 iff the images are equal.

    Raises:
        ValueError: different shapes (names both), non-float tensors, unknown reduction.
    """
    check_image_pair(student, target)
    return reduce_per_example((student - target.detach().to(student.dtype)).abs(), reduction)


def ssim_loss(student: torch.Tensor, target: torch.Tensor, value_range: Tuple[float, float] = (-1.0, 1.0),
              kernel_size: int = 11, sigma: float = 1.5, form: str = "unit") -> torch.Tensor:
    """Structural similarity loss ``L_SSIM = 1 - SSIM(G^s(x), y)`` (OMGD, VEM paper eq. 15; Wang et al. 2004).

    The paper names the term without its form; ``1 - SSIM`` is the usual distance (0 for equal images).
    Both images are first mapped from ``value_range`` (default ``(-1, 1)``, the generators' tanh output)
    onto [0, 1], and SSIM is taken with data range 1: SSIM's luminance term ``(2 mu_x mu_y + C1) /
    (mu_x^2 + mu_y^2 + C1)`` is not shift-invariant, and on [-1, 1] images every mid-grey region (mean
    near 0) would score near 0 whatever its structure. SSIM is torchmetrics' (Gaussian window
    ``kernel_size`` x ``kernel_size`` of std ``sigma``, K1 = 0.01, K2 = 0.03; the SSIM map averaged over
    every pixel, the borders from reflection padding, then over channels and the batch; scikit-image's
    ``structural_similarity`` crops the borders instead, so the two differ slightly).

    ``form="omgd"``: OMGD's SSIM instead (bytedance/OMGD ``models/modules/pytorch_ssim.py``, ``_ssim``, called by
    ``backward_G_student``): on the raw pixel values (no mapping; ``value_range`` unused), C1 = 0.01^2 and
    C2 = 0.03^2, the Gaussian window applied per channel with zero padding of ``kernel_size // 2``, the SSIM map
    averaged over every position, channel and example.

    Args:
        student, target: [B, C, H, W] (H, W >= ``kernel_size``); target detached.
        value_range: (low, high) of the pixel values, low < high. kernel_size: odd window size.
        sigma: window std. form: ``unit`` (torchmetrics on [0, 1]) or ``omgd``.

    Raises:
        ValueError: shapes differ (names both), non-float tensors, an empty value range, an unknown form.
    """
    check_image_pair(student, target)
    check_mode(form, SSIM_FORMS, "form")
    if form == "omgd":
        return 1.0 - _ssim_zero_padded(student, target.detach().to(student.dtype), kernel_size, sigma)
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range!r}")
    to_unit = lambda x: (x - low) / (high - low)  # noqa: E731
    ssim = structural_similarity_index_measure(to_unit(student), to_unit(target.detach().to(student.dtype)),
                                               data_range=1.0, kernel_size=kernel_size, sigma=sigma,
                                               reduction="elementwise_mean")
    return 1.0 - ssim


def _ssim_zero_padded(x: torch.Tensor, y: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Mean SSIM map of ``x`` and ``y`` [B, C, H, W] as OMGD's ``pytorch_ssim._ssim`` (see :func:`ssim_loss`)."""
    import torch.nn.functional as F

    k = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - kernel_size // 2
    g = torch.exp(-k.pow(2) / (2 * sigma ** 2))
    g = g / g.sum()
    c = x.shape[1]
    window = (g[:, None] @ g[None, :]).expand(c, 1, kernel_size, kernel_size).contiguous()
    blur = lambda v: F.conv2d(v, window, padding=kernel_size // 2, groups=c)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x.pow(2), blur(y * y) - mu_y.pow(2), blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2))
    return ssim.mean()


def total_variation(x: torch.Tensor, norm: str = "l1", reduction: str = "sum") -> torch.Tensor:
    """Anisotropic total variation of an image batch (OMGD's ``L_TV``, VEM paper eq. 12).

    ``TV(x) = sum_{c,i,j} |x[c,i+1,j] - x[c,i,j]| + |x[c,i,j+1] - x[c,i,j]|`` (``norm="l1"``, the usual
    definition, as ``kornia.losses.total_variation``) or the same with squared differences (``"l2"``).
    The paper names the term without its form: this choice is ours. ``reduction="sum"`` sums each image's
    differences and averages the batch; ``"mean"`` divides that by C*H*W; ``"batch_sum"`` sums over the whole
    batch (B times ``"sum"``), as OMGD's ``backward_G_student`` (bytedance/OMGD
    ``distillers/multiteacher_distiller.py``: ``torch.sum(torch.abs(...))`` of both directions); under DDP
    with W ranks, W times this rank's sum, so that DDP's average over the ranks is the global batch's sum.

    Args:
        x: [B, C, H, W] float. norm: ``"l1"`` or ``"l2"``. reduction: ``"sum"``, ``"mean"`` or ``"batch_sum"``.

    Returns:
        Scalar >= 0; 0 for a constant image.
    """
    check_float_tensor(x, "x")
    if x.dim() != 4:
        raise ValueError(f"total_variation expects images [B, C, H, W], got shape {tuple(x.shape)}")
    check_mode(norm, TV_NORMS, "norm")
    check_mode(reduction, TV_REDUCTIONS, "reduction")
    dh, dw = x[:, :, 1:, :] - x[:, :, :-1, :], x[:, :, :, 1:] - x[:, :, :, :-1]
    f = (lambda d: d.abs()) if norm == "l1" else (lambda d: d.pow(2))  # noqa: E731
    per_example = f(dh).flatten(1).sum(1) + f(dw).flatten(1).sum(1)
    if reduction == "batch_sum":
        # under DDP a sum over the global batch: W times this rank's (DDP averages the W ranks' gradients)
        return per_example.sum() * world()[0]
    if reduction == "mean":
        per_example = per_example / x[0].numel()
    return per_example.mean()


def _feature_pairs(student: torch.Tensor, teacher: torch.Tensor, features: FeatureFn):
    """The feature lists of both images; the teacher's without a graph. Checks they pair up."""
    if not callable(features):
        raise TypeError(f"features must be a callable image -> list of tensors, got {type(features).__name__}")
    f_s = list(features(student))
    with torch.no_grad():
        f_t = [f.detach() for f in features(teacher.detach())]
    if not f_s or len(f_s) != len(f_t):
        raise ValueError(f"features returned {len(f_s)} student and {len(f_t)} teacher tensors; need >= 1 each, "
                         "as many for both")
    for k, (a, b) in enumerate(zip(f_s, f_t)):
        if a.shape != b.shape:
            raise ValueError(f"feature {k}: student {tuple(a.shape)} and teacher {tuple(b.shape)} differ")
    return f_s, f_t


def _layer_weights(weights: Optional[Sequence[float]], n: int) -> List[float]:
    if weights is None:
        return [1.0] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"layer_weights has {len(weights)} entries for {n} feature tensors")
    return weights


def perceptual_loss(student: torch.Tensor, teacher: torch.Tensor, features: FeatureFn,
                    layer_weights: Optional[Sequence[float]] = None, distance: str = "mse") -> torch.Tensor:
    """Perceptual (feature reconstruction) loss ``sum_j w_j ||phi_j(G^s) - phi_j(G^t)||_2^2 / (C_j H_j W_j)``.

    Source: Johnson et al. 2016, eq. 2 (the VEM paper's ``L_PL`` of OMGD, eq. 15, cites it), summed over
    the layers ``features`` returns (weights ``layer_weights``, default 1), averaged over the batch: per layer
    the mean squared difference over all elements (``F.mse_loss``). ``distance="l1"``: the mean absolute
    difference instead (``F.l1_loss``), OMGD's feature loss on one VGG layer (bytedance/OMGD
    ``distillers/multiteacher_distiller.py``, ``backward_G_student``: ``F.l1_loss(Sfeatures[1], Tfeatures[1])``).
    ``features`` is any frozen network; the teacher image's features are taken without a graph.

    Raises:
        ValueError: image shapes differ (names both), feature lists of different lengths or shapes, an
            unknown ``distance`` (lists :data:`FEATURE_DISTANCES`).
    """
    check_mode(distance, FEATURE_DISTANCES, "distance")
    check_image_pair(student, teacher)
    f_s, f_t = _feature_pairs(student, teacher, features)
    weights = _layer_weights(layer_weights, len(f_s))
    f = (lambda d: d.pow(2)) if distance == "mse" else (lambda d: d.abs())  # noqa: E731
    return sum(w * f(a - b.to(a.dtype)).mean() for w, a, b in zip(weights, f_s, f_t))


def _unit_channels(f: torch.Tensor, eps: float) -> torch.Tensor:
    """Unit-normalise a feature along channels (LPIPS eq. 1); vectors [B, D] along D."""
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


def lpips_distance(student: torch.Tensor, teacher: torch.Tensor, features: FeatureFn,
                   layer_weights: Optional[Sequence[float]] = None, eps: float = 1e-10) -> torch.Tensor:
    """LPIPS-form distance: ``sum_l w_l mean_{h,w} ||u_l^s(h,w) - u_l^t(h,w)||_2^2``, batch mean.

    Source: Zhang et al. 2018, eq. 1 (the VEM paper's ``LPIPS`` of CAGC, eq. 27): ``u`` is each layer's
    feature unit-normalised along channels. The learned per-channel weights of LPIPS need downloaded
    weights: here each channel weighs 1 (the "baseline" variant of that paper), and the network is the
    pluggable ``features`` (offline: the data set's kdlab classifier); ``layer_weights`` scale layers.

    Returns:
        Scalar >= 0; 0 when the features agree up to a positive per-position scale.
    """
    check_image_pair(student, teacher)
    eps = check_positive(eps, "eps")
    f_s, f_t = _feature_pairs(student, teacher, features)
    weights = _layer_weights(layer_weights, len(f_s))
    total = student.new_zeros(())
    for w, a, b in zip(weights, f_s, f_t):
        d = (_unit_channels(a, eps) - _unit_channels(b.to(a.dtype), eps)).pow(2).sum(1)  # [B, (H, W)]
        total = total + w * d.reshape(d.shape[0], -1).mean(1).mean()  # maps [B, H, W] and vectors [B]
    return total
