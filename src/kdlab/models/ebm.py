"""Energy-based models E_theta(t, s) -> R of VEM (Kang et al., NeurIPS 2022, sec. 3 eq. 4, Fig. 4, A.3).

``q_theta(t | s) = exp(-E_theta(t, s)) / Z_theta(s)`` is the variational distribution of the teacher's
output t given the student's output s. Two bodies, both with spectral normalisation
(``torch.nn.utils.parametrizations.spectral_norm``) on EVERY convolution and linear layer (A.3,
following Du & Mordatch 2019):

* :class:`ConvEnergy` for images [B, C, H, W] (Fig. 4 and the public ports, ``papers/NOTES.md``);
* :class:`MLPEnergy` for vectors [B, D] (classifier logits or pooled features; the paper has no
  classifier EBM: the same recipe, spectral-normalised linear layers and LeakyReLU).

Registered in :data:`ENERGIES` (``conv``, ``mlp``); :func:`build_energy` picks one by name or, with
``"auto"``, by the shape of t.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from kdlab.registry import Registry

#: Energy-model bodies by name (``objective.student.vem.energy``)
ENERGIES = Registry("energy model")
#: LeakyReLU slope of the ports' blocks
SLOPE = 0.2


def sn_conv(cin: int, cout: int, k: int = 3) -> nn.Module:
    """A spectrally normalised ``k x k`` convolution, padding ``k // 2``."""
    return spectral_norm(nn.Conv2d(cin, cout, k, padding=k // 2))


class ResBlock(nn.Module):
    """Fig. 4 "ResBlock": SN-conv3, LeakyReLU, SN-conv3, plus the shortcut (an SN-conv1 when the channel
    count changes), then AvgPool 2 (when ``down``) and LeakyReLU, as the ports.

    The ports initialise the second convolution near zero; under spectral normalisation the weight is
    divided by its largest singular value, so its initial scale has no effect and it is not done here.
    """

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.conv1, self.conv2 = sn_conv(cin, cout), sn_conv(cout, cout)
        self.skip = sn_conv(cin, cout, 1) if cin != cout else nn.Identity()
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(x), SLOPE)) + self.skip(x)
        if self.down:
            h = F.avg_pool2d(h, 2, ceil_mode=True)
        return F.leaky_relu(h, SLOPE)


@ENERGIES.register("conv")
class ConvEnergy(nn.Module):
    """The convolutional EBM of Fig. 4: ``E(t, s)`` for images.

    t and s are each average-pooled (3 x 3, stride 2, padding 1) and concatenated on channels; then
    ConvBlock C (SN-conv3 + LeakyReLU), ResBlock 2C, six ResBlocks 4C (each halving the map while it is
    larger than 1 x 1: a 28 x 28 input stops at 1 x 1 after four, 256 x 256 after seven), ReLU, global
    average pooling, SN-linear -> 1.

    Args:
        shape: per-sample shape (C, H, W) of t (and of s).
        channels: C of Fig. 4 (8 for Horse -> Zebra, 32 elsewhere in the paper, A.3).
        blocks: channel multipliers of the residual blocks (Fig. 4: 2, 4, 4, 4, 4, 4, 4).

    Shapes: ``forward(t [B, C, H, W], s [B, C, H, W]) -> [B]`` (one energy per pair, unbounded).

    Raises:
        ValueError: ``shape`` is not (C, H, W), or ``channels`` < 1.
    """

    def __init__(self, shape: Sequence[int], channels: int = 32, blocks: Sequence[int] = (2, 4, 4, 4, 4, 4, 4)) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"ConvEnergy takes images (C, H, W); got per-sample shape {tuple(shape)}")
        if channels < 1:
            raise ValueError(f"channels = {channels} must be >= 1")
        c_in, h = int(shape[0]), -(-int(shape[1]) // 2)  # after the 3x3 stride-2 pooling
        self.stem = sn_conv(2 * c_in, channels)
        layers, cin = [], channels
        for mult in blocks:
            cout = channels * int(mult)
            layers.append(ResBlock(cin, cout, down=h > 1))
            cin, h = cout, (-(-h // 2) if h > 1 else h)
        self.blocks = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(cin, 1))

    def forward(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = torch.cat([F.avg_pool2d(t, 3, 2, 1), F.avg_pool2d(s, 3, 2, 1)], dim=1)
        h = self.blocks(F.leaky_relu(self.stem(x), SLOPE))
        return self.head(F.relu(h).mean(dim=(2, 3))).squeeze(1)


@ENERGIES.register("mlp")
class MLPEnergy(nn.Module):
    """An MLP EBM for vectors (logits [B, K] or features [B, D]): ``concat(t, s)`` -> ``depth`` x
    (SN-linear ``hidden`` + LeakyReLU) -> SN-linear -> 1 (the recipe of A.3 applied to vectors).

    Args:
        shape: per-sample shape (D,) of t (and of s).
        channels: the hidden width.
        depth: number of hidden layers (>= 1).

    Shapes: ``forward(t [B, D], s [B, D]) -> [B]``.

    Raises:
        ValueError: ``shape`` is not (D,), ``channels`` or ``depth`` < 1.
    """

    def __init__(self, shape: Sequence[int], channels: int = 256, depth: int = 2) -> None:
        super().__init__()
        if len(shape) != 1:
            raise ValueError(f"MLPEnergy takes vectors (D,); got per-sample shape {tuple(shape)}")
        if channels < 1 or depth < 1:
            raise ValueError(f"channels = {channels} and depth = {depth} must be >= 1")
        layers, cin = [], 2 * int(shape[0])
        for _ in range(depth):
            layers += [spectral_norm(nn.Linear(cin, channels)), nn.LeakyReLU(SLOPE)]
            cin = channels
        layers.append(spectral_norm(nn.Linear(cin, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([t, s], dim=1)).squeeze(1)


def energy_name(kind: str, shape: Sequence[int]) -> str:
    """The body for ``kind`` (``auto``: ``conv`` for (C, H, W), ``mlp`` for (D,)).

    Raises:
        ValueError: ``auto`` for a shape that is neither (names it).
    """
    if kind != "auto":
        return kind
    if len(shape) == 3:
        return "conv"
    if len(shape) == 1:
        return "mlp"
    raise ValueError(f"no energy model for per-sample shape {tuple(shape)}: it takes images (C, H, W) or vectors (D,)")


def build_energy(kind: str, shape: Sequence[int], channels: int) -> nn.Module:
    """The energy model ``kind`` (``auto`` | ``conv`` | ``mlp``) for per-sample outputs of ``shape``.

    Raises:
        UnknownNameError: an unregistered ``kind`` (lists the known ones).
        ValueError: a shape the body does not take.
    """
    return ENERGIES.get(energy_name(kind, shape))(tuple(shape), channels=channels)


def weighted_layers(model: nn.Module) -> Tuple[nn.Module, ...]:
    """Every convolution and linear layer of ``model`` (tests check each is spectrally normalised)."""
    return tuple(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
