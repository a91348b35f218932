"""SAGAN generator and discriminator with self-attention (Zhang et al. 2019) for the unconditional row.

The VEM paper (``papers/003``, Table 3) compresses SAGAN on CelebA 64x64 with GCC. kdlab follows the
SAGAN paper and its public PyTorch port (DCGAN-shaped networks with spectral norm on every layer):

* generator ``z [B, latent_dim] -> [B, C, S, S]`` in [-1, 1]: SN transposed convolutions of widths
  ``(8, 4, 2, 1) * ngf`` for 64x64 (``(4, 2, 1) * ngf`` for 28/32), BatchNorm + ReLU, a self-attention
  block after the last two hidden layers (16x16 and 32x32 feature maps for 64x64), Tanh output.
* discriminator ``x [B, C, S, S] -> [B]``: SN convolutions 4x4 stride 2 of widths ``(1, 2, 4, 8) * ndf``
  (``(1, 2, 4)`` for 28/32), LeakyReLU(0.1), self-attention after the last two, a final SN
  convolution over the remaining map to one value per image.
* :class:`SelfAttention` (SAGAN sec. 3, eq. 1-2): ``f = W_f x``, ``g = W_g x`` (C/8 channels),
  ``h = W_h x`` (C channels), ``beta_{j,i} = softmax_i(f(x_i)^T g(x_j))``, ``o_j = sum_i beta_{j,i} h(x_i)``,
  ``y = gamma * o + x`` with ``gamma`` a learned scalar initialised at 0 (the block starts as the identity).

Spectral norm (Miyato et al. 2018) is ``torch.nn.utils.parametrizations.spectral_norm``: one power
iteration per training forward; in eval mode the stored estimate is used, so outputs are deterministic.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from kdlab.models.gates import ChannelGate
from kdlab.models.gan import DISCRIMINATORS, GENERATORS, GAN_IMAGE_SIZES, GeneratorBase, _check_pos_int
from kdlab.models.i2i import PRESETS


def _check_size(image_size: Any) -> int:
    if image_size not in GAN_IMAGE_SIZES:
        raise ValueError(f"image_size {image_size!r} has no SAGAN layer plan; accepted: "
                         f"{', '.join(map(str, GAN_IMAGE_SIZES))}")
    return int(image_size)


def _sn(module: nn.Module) -> nn.Module:
    return spectral_norm(module)


class SelfAttention(nn.Module):
    """SAGAN self-attention ``x [B, C, H, W] -> gamma * o + x`` (same shape); N = H*W positions.

    ``Q = W_q x + b_q`` and ``K = W_k x + b_k`` are ``[B, C//8, N]``, ``V = W_v x + b_v`` is ``[B, C, N]``
    (1x1 SN convolutions), ``A = softmax(Q^T K)`` over the last axis (``[B, N, N]``, row j attends over
    positions i) and ``o = V A^T``.

    Raises:
        ValueError: channels < 8 (C//8 query/key channels would be 0).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        channels = _check_pos_int("channels", channels)
        if channels < 8:
            raise ValueError(f"self-attention needs channels >= 8 (queries and keys have channels // 8), "
                             f"got {channels}")
        self.query = _sn(nn.Conv2d(channels, channels // 8, 1))
        self.key = _sn(nn.Conv2d(channels, channels // 8, 1))
        self.value = _sn(nn.Conv2d(channels, channels, 1))
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention(self, x: Tensor) -> Tensor:
        """The attention map ``[B, N, N]``: row j is the distribution over the positions that o_j reads."""
        q, k = self.query(x).flatten(2), self.key(x).flatten(2)
        return torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        v = self.value(x).flatten(2)
        o = torch.bmm(v, self.attention(x).transpose(1, 2)).view(b, c, h, w)
        return self.gamma * o + x


def _plan(image_size: int) -> List[tuple]:
    """(kernel, stride, padding) of the up-sampling layers 1 -> S (the discriminator reads it backwards)."""
    if image_size == 28:  # 1 -> 3 -> 7 -> 14 -> 28
        return [(3, 1, 0), (3, 2, 0), (4, 2, 1), (4, 2, 1)]
    n = 4 if image_size == 64 else 3
    return [(4, 1, 0)] + [(4, 2, 1)] * n


def _mults(image_size: int) -> List[int]:
    return [8, 4, 2, 1] if image_size == 64 else [4, 2, 1]


class SAGANGenerator(GeneratorBase):
    """SAGAN generator ``z [B, latent_dim] -> images [B, C, S, S]`` in [-1, 1] (Tanh).

    Args:
        out_channels: C (> 0). image_size: S in {28, 32, 64}.
        latent_dim: size of z (> 0; SAGAN's port uses 128, DCGAN 100).
        ngf: width of the last hidden layer (>= 8, the attention's C//8; SAGAN 64).

    Raises:
        ValueError: a non-positive int, ngf < 8, an image size without a plan, or (forward) a wrong z shape.
    """

    def __init__(self, out_channels: int = 3, image_size: int = 64, latent_dim: int = 128, ngf: int = 64) -> None:
        super().__init__()
        self.out_channels = _check_pos_int("out_channels", out_channels)
        self.image_size = _check_size(image_size)
        self.latent_dim = _check_pos_int("latent_dim", latent_dim)
        self.ngf = _check_pos_int("ngf", ngf)
        if self.ngf < 8:
            raise ValueError(f"ngf {self.ngf} is too narrow for self-attention; accepted: >= 8")
        self.arch = "sagan"
        self.arch_kwargs: Dict[str, Any] = {"latent_dim": self.latent_dim, "ngf": self.ngf}
        widths = [m * self.ngf for m in _mults(self.image_size)]
        plan = _plan(self.image_size)
        layers: List[nn.Module] = []
        #: GCC's names (SJLeo/GCC models/SAGAN.py ``Generator``): ``l{i}`` the i-th block's ReLU output, ``attn1``/``attn2``
        self.feature_layers: Dict[str, str] = {}
        cin = self.latent_dim
        for i, (cout, (k, s, p)) in enumerate(zip(widths, plan)):
            layers += [_sn(nn.ConvTranspose2d(cin, cout, k, s, p)), nn.BatchNorm2d(cout), nn.ReLU(True)]
            self.feature_layers[f"l{i + 1}"] = f"net.{len(layers) - 1}"
            if i >= len(widths) - 2:  # attention on the two largest maps, as SAGAN's attn1/attn2
                layers.append(SelfAttention(cout))
                self.feature_layers[f"attn{i + 3 - len(widths)}"] = f"net.{len(layers) - 1}"
            cin = cout
        k, s, p = plan[-1]
        layers += [_sn(nn.ConvTranspose2d(cin, self.out_channels, k, s, p)), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        #: the layers GCC distils (SAGAN.py ``generator_extract_layers = ['l2', 'attn2']``), through 1x1 convs
        self.distill_layers = ("l2", "attn2")

    def forward(self, z: Tensor) -> Tensor:
        """``z [B, latent_dim]`` or ``[B, latent_dim, 1, 1]`` -> images ``[B, C, S, S]`` in [-1, 1]."""
        return self.net(self.latent_4d(z))

    def extra_repr(self) -> str:
        return f"ngf={self.ngf}, latent_dim={self.latent_dim}, output={self.output_shape}"


class SAGANDiscriminator(nn.Module):
    """SAGAN discriminator ``x [B, C, S, S] -> [B]`` (a logit or a hinge-loss score).

    Args:
        in_channels: C (> 0). image_size: S in {28, 32, 64}. ndf: width of the first layer (>= 8).
        gate_threshold: None, or GCC's selective activation discriminator (SJLeo/GCC models/SAGAN.py
            ``MaskDiscriminator``): a :class:`kdlab.models.gates.ChannelGate` of this threshold after every hidden
            SN convolution, before its LeakyReLU.

    Feature names: ``layer{i}`` (block i's output, after its attention when it has one), and GCC's ``l{i}``
    (block i's LeakyReLU output), ``attn1``/``attn2`` (the two attention outputs).

    Raises:
        ValueError: a non-positive int, ndf < 8, an image size without a plan, a bad threshold, or (forward) a
            wrong shape.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 64, ndf: int = 64,
                 gate_threshold: Optional[float] = None) -> None:
        super().__init__()
        self.in_channels = _check_pos_int("in_channels", in_channels)
        self.image_size = _check_size(image_size)
        self.ndf = _check_pos_int("ndf", ndf)
        if self.ndf < 8:
            raise ValueError(f"ndf {self.ndf} is too narrow for self-attention; accepted: >= 8")
        self.arch = "sagan"
        self.arch_kwargs: Dict[str, Any] = {"ndf": self.ndf}
        if gate_threshold is not None:
            self.arch_kwargs["gate_threshold"] = float(gate_threshold)
        widths = [m * self.ndf for m in reversed(_mults(self.image_size))]
        plan = list(reversed(_plan(self.image_size)))  # the generator's layers read backwards
        layers: List[nn.Module] = []
        #: friendly names of the hidden blocks' outputs (GCC's D_k, VEM eq. 17): ``layer1`` .. ``layerN``
        self.feature_layers: Dict[str, str] = {}
        cin = self.in_channels
        for i, (cout, (k, s, p)) in enumerate(zip(widths, plan)):
            layers.append(_sn(nn.Conv2d(cin, cout, k, s, p)))
            if gate_threshold is not None:
                layers.append(ChannelGate(cout, gate_threshold))
            layers.append(nn.LeakyReLU(0.1, inplace=gate_threshold is None))
            self.feature_layers[f"l{i + 1}"] = f"net.{len(layers) - 1}"
            if i >= len(widths) - 2:
                layers.append(SelfAttention(cout))
                self.feature_layers[f"attn{i + 3 - len(widths)}"] = f"net.{len(layers) - 1}"
            self.feature_layers[f"layer{i + 1}"] = f"net.{len(layers) - 1}"
            cin = cout
        k, s, p = plan[-1]
        layers.append(_sn(nn.Conv2d(cin, 1, k, s, p)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(f"SAGAN discriminator expects images [B, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}], got shape {tuple(x.shape)}")
        return self.net(x).reshape(x.shape[0])


@GENERATORS.register("sagan", help="SAGAN generator: SN transposed convs, BN, self-attention on the two largest "
                                   "maps, Tanh (latent input)")
def sagan_generator(out_channels: int = 3, image_size: int = 64, latent_dim: int = 128,
                    ngf: int = 64) -> SAGANGenerator:
    return SAGANGenerator(out_channels, image_size, latent_dim, ngf)


@DISCRIMINATORS.register("sagan", help="SAGAN discriminator: SN convs, LeakyReLU(0.1), self-attention, one value")
def sagan_discriminator(in_channels: int = 3, image_size: int = 64, ndf: int = 64,
                        gate_threshold: Optional[float] = None) -> SAGANDiscriminator:
    return SAGANDiscriminator(in_channels, image_size, ndf, gate_threshold)


# Table 3 (SAGAN, CelebA): GCC cuts the cost from 23.45M to 15.45M (34.12%); MACs scale with ngf^2, so the
# student width is 64 * sqrt(15.45 / 23.45) = 52 (GCC prunes channels per layer; one width approximates it).
PRESETS["sagan-teacher"] = ("sagan", {"ngf": 64})
PRESETS["sagan-student"] = ("sagan", {"ngf": 52})

__all__ = ["SelfAttention", "SAGANGenerator", "SAGANDiscriminator", "GAN_IMAGE_SIZES"]
