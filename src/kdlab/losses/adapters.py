"""Feature-shape adapters that terms own as trainable modules (built from feature shapes at start).

* :func:`to_vector`: a feature [B, ...] as a vector [B, D] (global average pooling of maps, or flatten);
* :class:`Embed`: a linear head ``D_in -> D_out`` with optional L2 normalisation (CRD's embedding, Tian
  et al. 2020 section 3.1; RepDistiller ``Embed``);
* :class:`ConvRegressor`: maps a student feature onto a teacher feature's shape: 1x1 convolution +
  BatchNorm for maps (adaptive average pooling when the student map is larger; FitNets/VID/AB/NST
  connectors), a linear layer for vectors.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

POOLS = ("avg", "flatten")


def to_vector(x: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """``x`` [B, ...] as [B, D]: ``avg`` = mean over spatial positions of a map [B, C, H, W] (D = C),
    ``flatten`` = all elements (D = C*H*W); a vector [B, D] is returned as is.

    Raises:
        ValueError: unknown ``pool`` (lists :data:`POOLS`), or ``x`` without a batch dimension.
    """
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; accepted: {', '.join(POOLS)}")
    if x.dim() < 2:
        raise ValueError(f"a feature needs shape [B, ...]; got {tuple(x.shape)}")
    if x.dim() == 2:
        return x
    if pool == "avg":
        return x.flatten(2).mean(2)
    return x.flatten(1)


def vector_size(shape: Sequence[int], pool: str = "avg") -> int:
    """D of :func:`to_vector` for a per-sample ``shape`` (C,), (C, H, W) ..."""
    shape = tuple(int(v) for v in shape)
    if len(shape) == 1 or pool == "avg":
        return shape[0]
    n = 1
    for v in shape:
        n *= v
    return n


class Embed(nn.Module):
    """``z = W to_vector(x) + b``, L2-normalised per sample when ``normalize`` (CRD, Tian et al. 2020).

    Args:
        in_shape: per-sample feature shape (C, H, W) or (D,); out_dim: D_out >= 1; pool: see :func:`to_vector`.

    ``forward(x [B, *in_shape]) -> [B, out_dim]`` (unit L2 norm per row when ``normalize``).
    """

    def __init__(self, in_shape: Sequence[int], out_dim: int, pool: str = "avg", normalize: bool = True) -> None:
        super().__init__()
        if int(out_dim) < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim!r}")
        self.pool, self.normalize = pool, normalize
        self.linear = nn.Linear(vector_size(in_shape, pool), int(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(to_vector(x, self.pool))
        return F.normalize(z, dim=1) if self.normalize else z


class ConvRegressor(nn.Module):
    """Maps a student feature to a teacher feature's shape (trained with the student).

    Maps (C_s, H_s, W_s) -> (C_t, H_t, W_t): adaptive average pooling to (H_t, W_t) when the student
    map is larger, then 1x1 conv (no bias) + BatchNorm2d. Vectors (D_s,) -> (D_t,): a linear layer.

    Raises:
        ValueError: a map paired with a vector, or a student map smaller than the teacher's (names both shapes).
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> None:
        super().__init__()
        s, t = tuple(int(v) for v in student_shape), tuple(int(v) for v in teacher_shape)
        self.shapes: Tuple[Tuple[int, ...], Tuple[int, ...]] = (s, t)
        if len(s) != len(t) or len(s) not in (1, 3):
            raise ValueError(f"features must both be maps (C, H, W) or both vectors (D,); got student {s} and teacher {t}")
        if len(s) == 1:
            self.body: nn.Module = nn.Linear(s[0], t[0])
            return
        if s[1] < t[1] or s[2] < t[2]:
            raise ValueError(f"the student map {s} is smaller than the teacher map {t}: pick a pair where the "
                             "student's spatial size is at least the teacher's")
        layers = [] if s[1:] == t[1:] else [nn.AdaptiveAvgPool2d(t[1:])]
        self.body = nn.Sequential(*layers, nn.Conv2d(s[0], t[0], 1, bias=False), nn.BatchNorm2d(t[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
