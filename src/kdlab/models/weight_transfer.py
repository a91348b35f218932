"""A narrow generator started from its teacher's weights: GAN-Compression's ``load_pretrained_weight``.

GAN-Compression (Li et al. 2020; VEM paper A.2.3) and CAT (Jin et al. 2021; A.2.4) do not start their
students from random weights: ``restore_pretrained_G_path`` loads the teacher and
``utils/weight_transfer.py: load_pretrained_weight`` (mit-han-lab/gan-compression; the same function in
snap-research/CAT) copies into the student, layer by layer, the teacher's channels of largest L1 norm:

* a convolution ``W [C_out, C_in, k, k]`` first keeps the input channels the previous layer kept
  (``W[:, in_index]``; all channels at the first layer), then the ``C_out^s`` output channels of largest
  ``sum |W[o]|`` (``topk``, largest first: the student's channel j is the teacher's j-th strongest);
  biases follow the output channels (``transfer_Conv2d``);
* a transposed convolution ``W [C_in, C_out, k, k]`` likewise with the axes swapped (``transfer_ConvTranspose2d``);
* a residual block keeps its stream's channels: its first convolution picks its hidden channels, its
  second maps them back onto the block's input channels (``transfer_ResnetBlock``);
* the last convolution keeps every output channel (the image) and copies its bias whole.

The official code covers the ResNet generators (``resnet_9blocks``: CycleGAN's). InstanceNorm without
affine parameters has nothing to copy; with ``norm: batch`` kdlab also slices the BatchNorm weights and
running statistics by the same output channels (the official function has no BatchNorm case).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from kdlab.models.i2i import ResnetGenerator


def _strongest(weight_abs_sum: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest entries, largest first (``torch.topk``, as the official code)."""
    return weight_abs_sum.topk(k, largest=True).indices


def _copy_norm(src: nn.Module, dst: nn.Module, index: Tensor) -> None:
    """Slice a BatchNorm's affine weights and running statistics by ``index`` (InstanceNorm: nothing to copy)."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        s, d = getattr(src, name, None), getattr(dst, name, None)
        if isinstance(s, Tensor) and isinstance(d, Tensor):
            d.copy_(s[index])


def _conv(src: nn.Conv2d, dst: nn.Conv2d, in_index: Tensor, out_index: Optional[Tensor] = None,
          norms: Sequence[nn.Module] = ()) -> Tensor:
    """``transfer_Conv2d``: keep ``in_index`` inputs, then the strongest outputs (or ``out_index``)."""
    w = src.weight[:, in_index]
    idx = _strongest(w.abs().sum((1, 2, 3)), dst.out_channels) if out_index is None else out_index
    dst.weight.copy_(w[idx])
    if dst.bias is not None:
        dst.bias.copy_(src.bias[idx])
    if norms:
        _copy_norm(norms[0], norms[1], idx)
    return idx


def _conv_t(src: nn.ConvTranspose2d, dst: nn.ConvTranspose2d, in_index: Tensor,
            norms: Sequence[nn.Module] = ()) -> Tensor:
    """``transfer_ConvTranspose2d``: weights ``[C_in, C_out, k, k]``, inputs kept, strongest outputs picked."""
    w = src.weight[in_index]
    idx = _strongest(w.abs().sum((0, 2, 3)), dst.out_channels)
    dst.weight.copy_(w[:, idx])
    if dst.bias is not None:
        dst.bias.copy_(src.bias[idx])
    if norms:
        _copy_norm(norms[0], norms[1], idx)
    return idx


@torch.no_grad()
def transfer_teacher_channels(teacher: nn.Module, student: nn.Module) -> None:
    """Overwrite ``student``'s weights (in place) with ``teacher``'s strongest channels, layer by layer
    (GAN-Compression ``utils/weight_transfer.py: load_pretrained_weight``, branch ``resnet_9blocks``).

    With the teacher's width (same ``ngf``) the student becomes a channel permutation of the teacher and
    computes the same images (up to float rounding).

    Args:
        teacher, student: :class:`kdlab.models.i2i.ResnetGenerator` (``resnet_gen``) with the same blocks,
            channels and norm, the student no wider (``student.ngf <= teacher.ngf``).

    Raises:
        ValueError: another generator, or a student of other blocks / channels / norm, or wider (names both).
    """
    if not isinstance(teacher, ResnetGenerator) or not isinstance(student, ResnetGenerator):
        raise ValueError(f"players.student_init = 'teacher' copies the teacher's strongest channels into a resnet_gen "
                         f"student of a resnet_gen teacher (GAN-Compression's load_pretrained_weight); got teacher "
                         f"{getattr(teacher, 'arch', type(teacher).__name__)!r}, student "
                         f"{getattr(student, 'arch', type(student).__name__)!r}; accepted: resnet_gen, or "
                         "players.student_init=random")
    keys = ("n_blocks", "in_channels", "out_channels", "norm")
    t_kw, s_kw = {k: getattr(teacher, k) for k in keys}, {k: getattr(student, k) for k in keys}
    if t_kw != s_kw or student.ngf > teacher.ngf:
        raise ValueError(f"players.student_init = 'teacher' needs a student with the teacher's {', '.join(keys)} and "
                         f"ngf <= the teacher's: teacher {t_kw} ngf {teacher.ngf}, student {s_kw} ngf {student.ngf}")
    idx = torch.arange(teacher.in_channels)
    idx = _conv(teacher.stem[1], student.stem[1], idx, norms=(teacher.stem[2], student.stem[2]))
    for t_down, s_down in zip(teacher.downs, student.downs):
        idx = _conv(t_down[0], s_down[0], idx, norms=(t_down[1], s_down[1]))
    for t_block, s_block in zip(teacher.blocks, student.blocks):
        tb, sb = t_block.body, s_block.body
        hidden = _conv(tb[1], sb[1], idx, norms=(tb[2], sb[2]))
        _conv(tb[5], sb[5], hidden, out_index=idx, norms=(tb[6], sb[6]))  # back onto the stream's channels
    for t_up, s_up in zip(teacher.ups, student.ups):
        idx = _conv_t(t_up["conv"], s_up["conv"], idx, norms=(t_up["act"][0], s_up["act"][0]))
    _conv(teacher.head[1], student.head[1], idx, out_index=torch.arange(teacher.out_channels))


__all__ = ["transfer_teacher_channels"]
