"""Factor transfer (Kim, Park & Kwak 2018, "Paraphrasing complex network: network compression via factor
transfer", eqs. 1-3): a paraphraser (teacher side), a translator (student side) and the factor loss."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.losses._common import check_feature_pair

FT_NORMS = (1, 2)
_EPS = 1e-12  # F.normalize's default: an all-zero factor stays zero instead of dividing by 0
_SLOPE = 0.1  # LeakyReLU slope of the FT code (and RepDistiller's Paraphraser/Translator)


def factor_channels(teacher_channels: int, rate: float) -> int:
    """Channels of the factor: ``max(1, floor(rate * C_t))`` (the factor rate k of the paper; RepDistiller
    truncates ``int(C_t * k)`` likewise)."""
    return max(1, int(teacher_channels * float(rate)))


def _encoder(c_in: int, m: int, bn: bool) -> nn.Sequential:
    """Three 3x3 convolutions (stride 1, padding 1) ``c_in -> c_in -> m -> m``, each followed by
    (BatchNorm and) LeakyReLU(0.1): the FT code's encoder and translator shape."""
    layers = []
    for a, b in ((c_in, c_in), (c_in, m), (m, m)):
        layers += [nn.Conv2d(a, b, 3, 1, 1)] + ([nn.BatchNorm2d(b)] if bn else []) + [nn.LeakyReLU(_SLOPE)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """The teacher-side auto-encoder of factor transfer (Kim et al. 2018, section 3.1, eq. 1).

    Encoder: three 3x3 convolutions (stride 1, padding 1) ``C_t -> C_t -> m -> m`` with LeakyReLU(0.1),
    ``m = factor_channels(C_t, rate)``; its output is the teacher factor ``F_t`` [B, m, H, W]. Decoder:
    three 3x3 transposed convolutions ``m -> m -> C_t -> C_t``, LeakyReLU between them and none after the
    last, so the reconstruction can be negative like a pre-activation teacher feature (RepDistiller ends
    with a LeakyReLU). No BatchNorm (RepDistiller's default ``use_bn=False``): the factor of a trained
    paraphraser does not depend on batch statistics. Trained on :meth:`reconstruction_loss` (eq. 1).

    Args:
        channels: C_t >= 1; rate: the factor rate k > 0 (default 0.5, the paper's and RepDistiller's).
    """

    def __init__(self, channels: int, rate: float = 0.5) -> None:
        super().__init__()
        if int(channels) < 1 or not float(rate) > 0:
            raise ValueError(f"Paraphraser needs channels >= 1 and rate > 0, got {channels!r}, {rate!r}")
        m = factor_channels(int(channels), rate)
        self.factor_channels = m
        self.encoder = _encoder(int(channels), m, bn=False)
        c = int(channels)
        self.decoder = nn.Sequential(nn.ConvTranspose2d(m, m, 3, 1, 1), nn.LeakyReLU(_SLOPE),
                                     nn.ConvTranspose2d(m, c, 3, 1, 1), nn.LeakyReLU(_SLOPE),
                                     nn.ConvTranspose2d(c, c, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The factor ``F_t`` [B, m, H, W] of a teacher map ``x`` [B, C_t, H, W]."""
        return self.encoder(x)

    def reconstruction_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 1, ``||x - P(x)||_2^2`` averaged over all elements (``F.mse_loss``); ``x`` is detached."""
        x = x.detach()
        return F.mse_loss(self.decoder(self.encoder(x)), x)


class Paraphrasers(nn.ModuleList):
    """The paraphrasers of several (student, teacher) pairs as one module whose forward is their summed
    reconstruction loss (eq. 1) on the teacher maps ``[x_1, ...]`` (each [B, C_t, H, W]): a training step
    through one wrapper (DDP) then averages their gradients across ranks."""

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(p.reconstruction_loss(x) for p, x in zip(self, maps))


class Translator(nn.Module):
    """The student-side translator of factor transfer (Kim et al. 2018, section 3.2): adaptive average
    pooling to the teacher's ``H x W`` when the student map is larger, then three 3x3 convolutions
    ``C_s -> C_s -> m -> m`` each with BatchNorm and LeakyReLU(0.1) (as RepDistiller's Translator);
    output the student factor ``F_s`` [B, m, H_t, W_t]. Trained with the student.

    Raises:
        ValueError: shapes that are not (C, H, W), or a student map smaller than the teacher's (names both).
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int], rate: float = 0.5) -> None:
        super().__init__()
        s, t = tuple(int(v) for v in student_shape), tuple(int(v) for v in teacher_shape)
        if len(s) != 3 or len(t) != 3:
            raise ValueError(f"factor transfer needs feature maps (C, H, W); got student {s} and teacher {t}")
        if s[1] < t[1] or s[2] < t[2]:
            raise ValueError(f"the student map {s} is smaller than the teacher map {t}: pick a pair where the "
                             "student's spatial size is at least the teacher's")
        m = factor_channels(t[0], rate)
        pool = [] if s[1:] == t[1:] else [nn.AdaptiveAvgPool2d(t[1:])]
        self.body = nn.Sequential(*pool, *_encoder(s[0], m, bn=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def ft_loss(student_factor: torch.Tensor, teacher_factor: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Factor-transfer loss, Kim et al. 2018 eq. 3: ``mean_b || F_t/||F_t||_2 - F_s/||F_s||_2 ||_p``.

    Each factor is flattened per example (all m*H*W values) and divided by its L2 norm (norm clamped below
    by 1e-12: an all-zero factor stays zero); the p-norm (p = 1 default, the paper's choice; or 2, not
    squared) of the difference is taken per example and averaged over the batch. RepDistiller's
    ``FactorTransfer`` differs: it first reduces the factor over channels to ``mean_c F_c^2`` (an
    attention-like map) and averages ``|diff|^p`` over elements. The teacher factor is detached (the
    paraphraser is fixed while the student learns).

    Args:
        student_factor: [B, ...] (the translator's output, e.g. [B, m, H, W]).
        teacher_factor: same shape (the paraphraser's encoder output); detached inside.
        p: 1 or 2.

    Returns:
        Scalar in [0, 2] for p = 2 and [0, 2 sqrt(D)] for p = 1 (D values per factor); 0 for factors
        that are positive multiples of each other.

    Raises:
        ValueError: ``p`` not 1 or 2, non-float tensors, rank < 2 or different shapes (names both).
    """
    if isinstance(p, bool) or p not in FT_NORMS:
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    check_feature_pair(student_factor, teacher_factor, "factors")
    dtype = torch.float64 if student_factor.dtype == torch.float64 else torch.float32
    s = F.normalize(student_factor.to(dtype).flatten(1), p=2.0, dim=1, eps=_EPS)
    t = F.normalize(teacher_factor.detach().to(dtype).flatten(1), p=2.0, dim=1, eps=_EPS)
    return torch.linalg.vector_norm(s - t, ord=int(p), dim=1).mean()

