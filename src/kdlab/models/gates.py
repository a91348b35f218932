"""GCC's learnable channel gates: the "selective activation" of a discriminator's channels (Li et al. 2021,
"Revisiting Discriminator in GAN Compression", sec. 3.2; VEM paper 003 sec. 2.3).

A :class:`ChannelGate` after a convolution multiplies channel c by a binary mask
``m_c = (sign(alpha_c - threshold) + 1) / 2`` (1 above the threshold, 0 below, 1/2 exactly at it), with a
straight-through gradient ``d m_c / d alpha_c = 1`` (SJLeo/GCC: models/DifferentiableOp.py, classes ``Mask`` and
``DifferentiableOP``). ``alpha`` starts at 1 (every channel on) and is clipped to [0, 1] before each update
of the gates (``DifferentiableOP.clip_alpha``). The gates are trained by their own objective (the architecture
loss, :func:`kdlab.losses.gcc.selective_activation_loss`), never by the discriminator's optimizer.
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn


class ChannelGate(nn.Module):
    """``x [B, C, H, W] -> x * m[None, :, None, None]`` with ``m = (sign(alpha - threshold) + 1) / 2``.

    Args:
        channels: C (> 0). threshold: a channel is on while ``alpha_c > threshold`` (GCC's default 0.5;
            its SAGAN script 0.1); in [0, 1).

    Raises:
        ValueError: channels < 1 or a threshold outside [0, 1) (names it).
    """

    def __init__(self, channels: int, threshold: float = 0.5) -> None:
        super().__init__()
        if int(channels) < 1:
            raise ValueError(f"a channel gate needs channels >= 1, got {channels}")
        if not 0.0 <= float(threshold) < 1.0:
            raise ValueError(f"gate threshold {threshold!r} must be in [0, 1) (alpha starts at 1 and is clipped to [0, 1])")
        self.alpha = nn.Parameter(torch.ones(int(channels)))
        self.threshold = float(threshold)

    def mask(self) -> Tensor:
        """``[C]`` in {0, 1/2, 1}; its gradient reaches ``alpha`` unchanged (straight-through)."""
        hard = (torch.sign(self.alpha.detach() - self.threshold) + 1.0) / 2.0
        return hard + self.alpha - self.alpha.detach()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask().to(x.dtype)[None, :, None, None]

    @torch.no_grad()
    def clip_(self) -> None:
        """Clip ``alpha`` to [0, 1] (GCC: before every update of the gates)."""
        self.alpha.clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"channels={self.alpha.numel()}, threshold={self.threshold}"


def channel_gates(module: nn.Module) -> List[ChannelGate]:
    """Every :class:`ChannelGate` of ``module``, in module order (empty for an ungated network)."""
    return [m for m in module.modules() if isinstance(m, ChannelGate)]


class GateSet(nn.Module):
    """The gates of a discriminator as one player: its parameters are exactly the gates' ``alpha`` (the same
    tensors the discriminator holds), for the gates' own optimizer. Its buffers keep the architecture loss's
    state in the player's checkpoint: ``teacher_gap`` (the moving average of the teacher's gap; 0 = none yet) and
    ``epochs_done`` (finished epochs, for GCC's ``beta = 1 - epoch / epochs``)."""

    def __init__(self, gates: List[ChannelGate]) -> None:
        super().__init__()
        if not gates:
            raise ValueError("the discriminator has no channel gates")
        self.gates = nn.ModuleList(gates)
        self.register_buffer("teacher_gap", torch.zeros(()))
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def clip_(self) -> None:
        for g in self.gates:
            g.clip_()

    def active_fraction(self) -> Tensor:
        """Fraction of the gated channels that are on (mask 1), a scalar for logging."""
        masks = torch.cat([(g.alpha.detach() > g.threshold).float() for g in self.gates])
        return masks.mean()

    def forward(self, *args):  # a holder of parameters, never called
        raise RuntimeError("GateSet holds the discriminator's gates; run the discriminator itself")


__all__ = ["ChannelGate", "GateSet", "channel_gates"]
