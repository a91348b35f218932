"""Attention transfer (Zagoruyko & Komodakis 2017; Jacobian paper section 5.2, eq. 8-9)."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_float_tensor, check_mode, check_positive

ATTENTION_MODES = ("paper", "zagoruyko")
_EPS = 1e-12  # F.normalize's default: an all-zero map stays zero instead of dividing by 0


def _check_feature(x: torch.Tensor, name: str) -> None:
    check_float_tensor(x, name)
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape [B, C, H, W], got {tuple(x.shape)}")


def check_feature_pair(student_feature: torch.Tensor, teacher_feature: torch.Tensor, what: str) -> None:
    """Both float [B, C, H, W] of one batch size and one spatial size (C may differ); else ValueError
    naming ``what`` and both shapes."""
    _check_feature(student_feature, "student_feature")
    _check_feature(teacher_feature, "teacher_feature")
    s_shape, t_shape = tuple(student_feature.shape), tuple(teacher_feature.shape)
    if s_shape[2:] != t_shape[2:]:
        raise ValueError(f"{what} need the same spatial size; got student {s_shape[2]}x{s_shape[3]} (shape {s_shape}) "
                         f"and teacher {t_shape[2]}x{t_shape[3]} (shape {t_shape})")
    if s_shape[0] != t_shape[0]:
        raise ValueError(f"batch sizes differ: student {s_shape} and teacher {t_shape}")


def attention_map(feature: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Spatial attention map of a feature map, flattened and L2-normalised per sample.

    Jacobian paper (Srinivas & Fleuret 2018) eq. 8, after Zagoruyko & Komodakis 2017:
    ``A = sum_{c in channels} |Z_c|^p`` (p = 2 in both papers), then ``A / ||A||_2`` as used in
    eq. 9. The norm is clamped below by 1e-12, so an all-zero map gives zeros, not NaN. The map
    is computed in float32 (float64 for float64 input): |Z|^2 summed over many channels
    overflows float16.

    Args:
        feature: [B, C, H, W] activations.
        p: exponent > 0 applied to ``|Z|`` (2 in both papers).

    Returns:
        [B, H*W] non-negative tensor, each row of unit L2 norm (or all zero).

    Raises:
        ValueError: ``feature`` not a float 4-D tensor (names its shape), or ``p`` not a finite
            number > 0 (names it).
    """
    p = check_positive(p, "p")
    _check_feature(feature, "feature")
    dtype = torch.float64 if feature.dtype == torch.float64 else torch.float32
    z = feature.to(dtype)
    a = z.pow(2) if p == 2 else z.abs().pow(p)  # pow(2) == |Z|^2 and has a clean gradient at 0
    a = a.sum(dim=1).flatten(1)
    return F.normalize(a, p=2.0, dim=1, eps=_EPS)


def attention_loss(
    student_feature: torch.Tensor,
    teacher_feature: torch.Tensor,
    p: float = 2,
    mode: str = "paper",
) -> torch.Tensor:
    """Attention-transfer loss between one student and one teacher feature map.

    With ``a = attention_map(Z, p)`` (eq. 8, L2-normalised per sample):

    * ``mode='paper'`` -- Jacobian paper eq. 9: ``|| A_t/||A_t|| - A_s/||A_s|| ||_2``, the L2 norm
      (not squared) of the difference, averaged over the batch. Range [0, sqrt(2)] per sample.
    * ``mode='zagoruyko'`` -- the public AT code (github.com/szagoruyko/attention-transfer,
      ``at_loss``): ``(at(x) - at(y)).pow(2).mean()`` with ``at(x) = normalize(x.pow(p).mean(1))``,
      i.e. the squared difference averaged over all B*H*W elements. Averaging over channels
      instead of summing does not change the normalised map. The AT paper weights this term by
      beta/2 with beta = 1000 (a weight for the method to apply, not applied here). For odd p the
      code's ``x.pow(p)`` differs from ``|x|^p``; both modes here use ``|x|^p`` as eq. 8 does.

    Channel counts may differ (maps are summed over channels); spatial sizes must match.
    The teacher feature is detached. The gradient of the unsquared norm at a zero difference is
    taken as 0 (PyTorch's convention), so identical maps give a finite zero gradient.

    Args:
        student_feature: [B, C_s, H, W].
        teacher_feature: [B, C_t, H, W].
        p: exponent of eq. 8, > 0 (default 2).
        mode: ``'paper'`` or ``'zagoruyko'``.

    Returns:
        Scalar tensor >= 0 (dimensionless: the maps have unit norm); 0 for proportional maps.

    Raises:
        ValueError: unknown ``mode`` (lists accepted), bad ``p``, features that are not 4-D,
            different batch sizes, or different spatial sizes (names both H x W sizes).
    """
    check_mode(mode, ATTENTION_MODES)
    check_feature_pair(student_feature, teacher_feature, "attention maps")
    a_s = attention_map(student_feature, p)
    a_t = attention_map(teacher_feature.detach(), p)
    diff = a_s - a_t
    if mode == "paper":
        return torch.linalg.vector_norm(diff, ord=2, dim=1).mean()
    return diff.pow(2).mean()


def attention_losses(
    pairs: Sequence[Tuple[torch.Tensor, torch.Tensor]],
    p: float = 2,
    mode: str = "paper",
) -> torch.Tensor:
    """Sum of :func:`attention_loss` over several (student, teacher) feature pairs.

    Zagoruyko & Komodakis 2017 match attention at the end of every stage (one pair per stage)
    and sum the per-pair losses; so does the Jacobian paper (section 6.3.1).

    Args:
        pairs: non-empty sequence of ``(student_feature [B,C_s,H,W], teacher_feature [B,C_t,H,W])``.
        p, mode: as for :func:`attention_loss`.

    Returns:
        Scalar tensor: the sum of the per-pair losses.

    Raises:
        ValueError: an empty ``pairs``, or any error of :func:`attention_loss` (prefixed with the
            index of the offending pair).
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("attention_losses needs at least one (student, teacher) feature pair, got none")
    total = None
    for i, pair in enumerate(pairs):
        try:
            s, t = pair
            term = attention_loss(s, t, p=p, mode=mode)
        except ValueError as e:
            raise ValueError(f"attention pair {i}: {e}") from e
        total = term if total is None else total + term
    return total
