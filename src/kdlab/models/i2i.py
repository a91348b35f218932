"""Image-to-image generators and the PatchGAN discriminator of the VEM paper's translation rows.

The VEM paper (``papers/003``, sec. 5.1) compresses Pix2Pix (Isola et al. 2017) with its U-Net
generator and CycleGAN (Zhu et al. 2017) with its ResNet generator, "following the original models"
and without changing "network structures of the compared algorithms". kdlab follows the public
pix2pix/CycleGAN implementation (``networks.py``: ``UnetGenerator``, ``ResnetGenerator``,
``NLayerDiscriminator``):

* ``unet``: ``num_downs`` 4x4 stride-2 convolutions of widths ``ngf * (1, 2, 4, 8, 8, ...)`` down to the
  bottleneck, mirrored by 4x4 stride-2 transposed convolutions whose input is the skip (the encoder
  output of the same depth) concatenated with the decoder output below it; LeakyReLU(0.2) in the
  encoder, ReLU in the decoder, no norm on the outermost layers nor on the bottleneck, Tanh output.
  Pix2Pix uses BatchNorm (convolutions without bias) and Dropout(0.5) in the 8*ngf blocks between
  the fifth and the bottleneck. ``num_downs`` defaults to ``ceil(log2(image_size))`` (256 -> 8 as
  ``unet_256``, 28/32 -> 5, 64 -> 6): the bottleneck is 1x1 as in pix2pix; inputs whose sides are
  not multiples of ``2**num_downs`` are reflect-padded and the output cropped back, so any size works.
* ``resnet_gen``: c7s1-ngf, d2ngf, d4ngf (3x3 stride 2), ``n_blocks`` residual blocks (reflect pad,
  conv3, norm, ReLU, reflect pad, conv3, norm), u2ngf, ungf (3x3 stride-2 transposed), c7s1-C, Tanh
  (CycleGAN appendix 7.2; 6 blocks for 128x128, 9 for 256x256). InstanceNorm without affine
  parameters, so every convolution has a bias. The transposed convolutions are called with the
  encoder's sizes, so odd sides (28 -> 14 -> 7, 30 -> 15 -> 8) come back exactly.
* ``patchgan``: C64-C128-C256-C512 (Pix2Pix appendix 6.1.2): 4x4 convolutions, stride 2 for the
  first ``n_layers`` and stride 1 for the last hidden one and the 1-channel output, widths
  ``ndf * min(2**i, 8)``, no norm on the first layer, LeakyReLU(0.2). ``n_layers = 3`` gives the
  70x70 receptive field. Its input is the condition and the image concatenated (``in_channels`` =
  both), its output a ``[B, 1, h, w]`` logit map.

Widths: parameter counts of all three scale with ngf^2 (every hidden weight is ``(a*ngf) x (b*ngf) x k^2``)
plus terms linear in ngf (biases, norms, the first and last layer). :data:`PRESETS` holds the
teacher/student widths of the paper's tables.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models.gan import DISCRIMINATORS, GENERATORS, GeneratorBase, _check_pos_int
from kdlab.models.gates import ChannelGate

NORMS = ("batch", "instance")


def _norm(kind: str, channels: int) -> nn.Module:
    # CycleGAN's "instance" is InstanceNorm2d(affine=False, track_running_stats=False)
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.InstanceNorm2d(channels)


def _check_norm(norm: Any) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r}; accepted: {', '.join(NORMS)}")
    return str(norm)


def _check_min_size(image_size: Any, minimum: int, what: str) -> int:
    size = _check_pos_int("image_size", image_size)
    if size < minimum:
        raise ValueError(f"image_size {size} is too small for the {what}; accepted: >= {minimum}")
    return size


def _check_image(x: Tensor, channels: int, what: str) -> None:
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{what} expects images [B, {channels}, H, W] (in_channels), got shape {tuple(x.shape)}")


def init_normal(module: nn.Module, gain: float = 0.02) -> None:
    """pix2pix/CycleGAN ``init_weights('normal')``: conv weights ~ N(0, 0.02), BN weights ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


class ImageGeneratorBase(GeneratorBase):
    """A generator ``x [B, in_channels, H, W] -> y [B, out_channels, H, W]`` in [-1, 1] (Tanh)."""

    input_kind = "image"
    latent_dim = None

    @property
    def input_shape(self) -> tuple:
        """``(in_channels, S, S)`` of one input image at the configured size."""
        return (self.in_channels, self.image_size, self.image_size)


class UNetGenerator(ImageGeneratorBase):
    """pix2pix U-Net ``x [B, in_channels, H, W] -> [B, out_channels, H, W]`` in [-1, 1].

    Args:
        in_channels, out_channels: channels of the input and the output images (> 0).
        image_size: the side S the net is built for (>= 4); it sets the default depth.
        ngf: width of the outermost encoder layer (> 0); pix2pix 64, OMGD's student 16.
        num_downs: stride-2 stages (2 .. ceil(log2 S)); None: ceil(log2 S), a 1x1 bottleneck.
        norm: ``batch`` (pix2pix, bias-free convs) or ``instance`` (convs with bias).
        dropout: Dropout(0.5) after the decoder of the 8*ngf blocks below the fifth (pix2pix's default).

    Raises:
        ValueError: a non-positive int, image_size < 4, num_downs outside the range, an unknown norm,
            or (forward) an input whose channels are not ``in_channels``.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, image_size: int = 256, ngf: int = 64,
                 num_downs: Optional[int] = None, norm: str = "batch", dropout: bool = False) -> None:
        super().__init__()
        self.in_channels = _check_pos_int("in_channels", in_channels)
        self.out_channels = _check_pos_int("out_channels", out_channels)
        self.image_size = _check_min_size(image_size, 4, "U-Net")
        self.ngf = _check_pos_int("ngf", ngf)
        self.norm = _check_norm(norm)
        deepest = math.ceil(math.log2(self.image_size))
        if num_downs is None:
            num_downs = deepest
        if isinstance(num_downs, bool) or not isinstance(num_downs, int) or not 2 <= num_downs <= deepest:
            raise ValueError(f"num_downs {num_downs!r} for image_size {self.image_size}; accepted: an integer in "
                             f"2..{deepest} (ceil(log2(image_size)): a 1x1 bottleneck) or None")
        self.num_downs, self.dropout = int(num_downs), bool(dropout)
        self.arch = "unet"
        self.arch_kwargs: Dict[str, Any] = {"in_channels": self.in_channels, "ngf": self.ngf,
                                            "num_downs": self.num_downs, "norm": self.norm, "dropout": self.dropout}
        bias = self.norm == "instance"
        n = self.num_downs
        widths = [self.ngf * min(2 ** i, 8) for i in range(n)]
        downs: List[nn.Module] = []
        ups: List[nn.Module] = []
        for i in range(n):
            cin = self.in_channels if i == 0 else widths[i - 1]
            outer, inner = i == 0, i == n - 1
            down: List[nn.Module] = [] if outer else [nn.LeakyReLU(0.2)]
            down.append(nn.Conv2d(cin, widths[i], 4, 2, 1, bias=bias))
            if not outer and not inner:  # pix2pix: no norm on the image layer nor on the 1x1 bottleneck
                down.append(_norm(self.norm, widths[i]))
            downs.append(nn.Sequential(*down))
            up_in = widths[i] if inner else 2 * widths[i]  # skip + decoder output below, except at the bottom
            up_out = self.out_channels if outer else cin
            up: List[nn.Module] = [nn.ReLU(), nn.ConvTranspose2d(up_in, up_out, 4, 2, 1, bias=bias or outer)]
            up.append(nn.Tanh() if outer else _norm(self.norm, up_out))
            if self.dropout and 4 <= i < n - 1:
                up.append(nn.Dropout(0.5))
            ups.append(nn.Sequential(*up))
        self.downs, self.ups = nn.ModuleList(downs), nn.ModuleList(ups)
        # enc{i}: encoder output at 1/2^i of the side (i = 1..n, enc{n} the bottleneck); dec{i}: decoder output
        # at 1/2^i (i = 1..n-1; dec0 would be the image itself, the "output")
        self.feature_layers: Dict[str, str] = {f"enc{i + 1}": f"downs.{i}" for i in range(n)}
        self.feature_layers.update({f"dec{i}": f"ups.{i}" for i in range(1, n)})
        #: default distilled layers: the three decoder stages nearest the output (widths ngf, 2ngf, 4ngf)
        self.distill_layers: List[str] = [f"dec{i}" for i in range(1, min(n, 4))]
        init_normal(self)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, in_channels, H, W]`` -> ``[B, out_channels, H, W]`` in [-1, 1] (any H, W)."""
        _check_image(x, self.in_channels, "U-Net")
        h, w = x.shape[-2:]
        m = 2 ** self.num_downs
        ph, pw = -h % m, -w % m
        if ph or pw:  # reflect where the pad fits in the image, else replicate the border
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode=mode)
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        y = self.ups[-1](skips[-1])
        for i in range(self.num_downs - 2, -1, -1):
            # the skip first, as pix2pix's cat([x, model(x)], 1), so published weights keep their channel order
            y = self.ups[i](torch.cat([skips[i], y], 1))
        return y[:, :, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]

    def extra_repr(self) -> str:
        return f"ngf={self.ngf}, num_downs={self.num_downs}, norm={self.norm!r}, in={self.in_channels}, " \
               f"out={self.out_channels}"


class ResnetBlock(nn.Module):
    """CycleGAN residual block ``x + (pad, conv3, norm, ReLU, pad, conv3, norm)(x)``, reflect padding."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=norm == "instance"), _norm(norm, channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=norm == "instance"), _norm(norm, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(ImageGeneratorBase):
    """CycleGAN ResNet generator ``x [B, in_channels, H, W] -> [B, out_channels, H, W]`` in [-1, 1].

    Args:
        in_channels, out_channels: channels of the input and the output (> 0).
        image_size: the side S it is built for (>= 8: the blocks' reflect padding needs a 2x2 map).
        ngf: width of the first layer (> 0); CycleGAN 64; students 16 or 32.
        n_blocks: residual blocks at 4*ngf (> 0; CycleGAN 6 for 128x128, 9 for 256x256).
        norm: ``instance`` (CycleGAN, convs with bias) or ``batch`` (bias-free convs).

    Raises:
        ValueError: a non-positive int, image_size < 8, an unknown norm, or (forward) wrong channels
            or a side < 8.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, image_size: int = 256, ngf: int = 64,
                 n_blocks: int = 9, norm: str = "instance") -> None:
        super().__init__()
        self.in_channels = _check_pos_int("in_channels", in_channels)
        self.out_channels = _check_pos_int("out_channels", out_channels)
        self.image_size = _check_min_size(image_size, 8, "ResNet generator")
        self.ngf = _check_pos_int("ngf", ngf)
        self.n_blocks = _check_pos_int("n_blocks", n_blocks)
        self.norm = _check_norm(norm)
        self.arch = "resnet_gen"
        self.arch_kwargs: Dict[str, Any] = {"in_channels": self.in_channels, "ngf": self.ngf,
                                            "n_blocks": self.n_blocks, "norm": self.norm}
        bias, g = self.norm == "instance", self.ngf
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(self.in_channels, g, 7, bias=bias),
                                  _norm(self.norm, g), nn.ReLU(True))
        self.downs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1, bias=bias), _norm(self.norm, 2 * c), nn.ReLU(True))
            for c in (g, 2 * g))
        self.blocks = nn.Sequential(*[ResnetBlock(4 * g, self.norm) for _ in range(self.n_blocks)])
        self.ups = nn.ModuleList(
            nn.ModuleDict({"conv": nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1, bias=bias),
                           "act": nn.Sequential(_norm(self.norm, c // 2), nn.ReLU(True))})
            for c in (4 * g, 2 * g))
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(g, self.out_channels, 7), nn.Tanh())
        self.feature_layers: Dict[str, str] = {"stem": "stem", "down1": "downs.0", "down2": "downs.1"}
        self.feature_layers.update({f"block{k + 1}": f"blocks.{k}" for k in range(self.n_blocks)})
        self.feature_layers.update({"up1": "ups.0.act", "up2": "ups.1.act"})
        #: default distilled layers, GAN-Compression's choice for CycleGAN (``model.9, .12, .15, .18`` of the
        #: 9-block generator): the input of the blocks and the outputs of blocks n/3, 2n/3 and n
        thirds = sorted({max(1, round(self.n_blocks * f)) for f in (1 / 3, 2 / 3, 1.0)})
        self.distill_layers: List[str] = ["down2"] + [f"block{k}" for k in thirds]
        init_normal(self)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, in_channels, H, W]`` -> ``[B, out_channels, H, W]`` in [-1, 1] (any H, W >= 8)."""
        _check_image(x, self.in_channels, "ResNet generator")
        if min(x.shape[-2:]) < 8:
            raise ValueError(f"ResNet generator input sides {tuple(x.shape[-2:])} are too small; accepted: >= 8")
        sizes = []
        x = self.stem(x)
        for down in self.downs:
            sizes.append(x.shape[-2:])
            x = down(x)
        x = self.blocks(x)
        for up, size in zip(self.ups, reversed(sizes)):
            # output_size picks output_padding 0 or 1 per side, so odd sides come back exactly
            x = up["act"](up["conv"](x, output_size=list(size)))
        return self.head(x)

    def extra_repr(self) -> str:
        return f"ngf={self.ngf}, n_blocks={self.n_blocks}, norm={self.norm!r}, in={self.in_channels}, " \
               f"out={self.out_channels}"


class PatchGANDiscriminator(nn.Module):
    """pix2pix PatchGAN ``x [B, in_channels, S, S] -> logits [B, 1, h, w]`` (one per overlapping patch).

    Args:
        in_channels: channels of what it judges; for pix2pix the condition and the image concatenated.
        image_size: S; the map side is ``floor(S / 2**n_layers) - 2`` (two 4x4 stride-1 convs, padding 1).
        ndf: width of the first layer (> 0; 64 in pix2pix). n_layers: stride-2 layers (> 0; 3 = 70x70 patches).
        norm: ``batch`` (pix2pix) or ``instance`` (CycleGAN).
        gate_threshold: None, or GCC's selective activation discriminator (SJLeo/GCC models/Pix2Pix.py
            ``MaskNLayerDiscriminator``): a :class:`kdlab.models.gates.ChannelGate` of this threshold after the first
            LeakyReLU and after every later norm (before its LeakyReLU).

    Raises:
        ValueError: a non-positive int, an unknown norm, an image too small for a 1x1 map (names the
            smallest accepted side), or (forward) wrong channels.
    """

    def __init__(self, in_channels: int = 6, image_size: int = 256, ndf: int = 64, n_layers: int = 3,
                 norm: str = "batch", gate_threshold: Optional[float] = None) -> None:
        super().__init__()
        self.in_channels = _check_pos_int("in_channels", in_channels)
        self.image_size = _check_pos_int("image_size", image_size)
        self.ndf = _check_pos_int("ndf", ndf)
        self.n_layers = _check_pos_int("n_layers", n_layers)
        self.norm = _check_norm(norm)
        if self.image_size // 2 ** self.n_layers - 2 < 1:
            raise ValueError(f"image_size {self.image_size} gives no output patch with n_layers {self.n_layers}; "
                             f"accepted: image_size >= {3 * 2 ** self.n_layers} or fewer layers")
        self.arch = "patchgan"
        self.arch_kwargs: Dict[str, Any] = {"ndf": self.ndf, "n_layers": self.n_layers, "norm": self.norm}
        gated = gate_threshold is not None
        if gated:
            self.arch_kwargs["gate_threshold"] = float(gate_threshold)
        bias = self.norm == "instance"
        layers: List[nn.Module] = [nn.Conv2d(self.in_channels, self.ndf, 4, 2, 1), nn.LeakyReLU(0.2, not gated)]
        layers += [ChannelGate(self.ndf, gate_threshold)] if gated else []
        # layer{i}: the activation of hidden layer i (i = 1 .. n_layers + 1), the maps GCC distils (eq. 17)
        self.feature_layers: Dict[str, str] = {"layer1": f"net.{len(layers) - 1}"}
        cin = self.ndf
        for i in range(1, self.n_layers + 1):
            cout = self.ndf * min(2 ** i, 8)
            stride = 2 if i < self.n_layers else 1
            layers += [nn.Conv2d(cin, cout, 4, stride, 1, bias=bias), _norm(self.norm, cout)]
            layers += [ChannelGate(cout, gate_threshold)] if gated else []
            layers.append(nn.LeakyReLU(0.2, True))
            self.feature_layers[f"layer{i + 1}"] = f"net.{len(layers) - 1}"
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        init_normal(self)

    def geometry(self) -> Tuple[int, int]:
        """``(map side, receptive field)`` by the conv arithmetic ``n' = (n + 2p - k) // s + 1``,
        ``rf' = rf + (k - 1) * jump``, ``jump' = jump * s``."""
        n, rf, jump = self.image_size, 1, 1
        for m in self.net:
            if isinstance(m, nn.Conv2d):
                k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
                n, rf, jump = (n + 2 * p - k) // s + 1, rf + (k - 1) * jump, jump * s
        return n, rf

    @property
    def output_shape(self) -> tuple:
        n = self.geometry()[0]
        return (1, n, n)

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, self.in_channels, "PatchGAN discriminator")
        return self.net(x)

    def extra_repr(self) -> str:
        n, rf = self.geometry()
        return f"ndf={self.ndf}, n_layers={self.n_layers}, map={n}x{n}, patch={rf}px"


@GENERATORS.register("unet", help="pix2pix U-Net (image input): ngf width, skips, BatchNorm, Tanh; keeps the size")
def unet_generator(out_channels: int = 3, image_size: int = 256, in_channels: int = 3, ngf: int = 64,
                   num_downs: Optional[int] = None, norm: str = "batch", dropout: bool = False) -> UNetGenerator:
    return UNetGenerator(in_channels, out_channels, image_size, ngf, num_downs, norm, dropout)


@GENERATORS.register("resnet_gen", help="CycleGAN ResNet generator (image input): c7s1-ngf, d2ngf, d4ngf, "
                                        "n_blocks R4ngf, u2ngf, ungf, c7s1-C, Tanh")
def resnet_generator(out_channels: int = 3, image_size: int = 256, in_channels: int = 3, ngf: int = 64,
                     n_blocks: int = 9, norm: str = "instance") -> ResnetGenerator:
    return ResnetGenerator(in_channels, out_channels, image_size, ngf, n_blocks, norm)


@DISCRIMINATORS.register("patchgan", help="pix2pix 70x70 PatchGAN: C64-C128-C256-C512, a [B, 1, h, w] logit map")
def patchgan_discriminator(in_channels: int = 6, image_size: int = 256, ndf: int = 64, n_layers: int = 3,
                           norm: str = "batch", gate_threshold: Optional[float] = None) -> PatchGANDiscriminator:
    return PatchGANDiscriminator(in_channels, image_size, ndf, n_layers, norm, gate_threshold)


#: Teacher/student widths of the VEM paper's tables (name -> generator, kwargs).
#: * pix2pix (Table 1, Edges -> Shoes / Cityscapes): the original U-Net has ngf 64 (54.40M parameters at
#:   256x256); OMGD's student has 3.40M = 54.40M / 16, the ngf^2 scaling of ngf 16.
#: * CycleGAN (Table 2): the original ResNet generator has ngf 64 and 9 blocks (11.30M in the table,
#:   11.38M counted); students at ngf 32 and 16 (11.38M / 4, / 16). The table's 0.14M OMGD student uses
#:   separable convolutions (GAN-Compression's mobile blocks), which these plain-conv presets do not reproduce.
PRESETS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "pix2pix-teacher": ("unet", {"ngf": 64, "dropout": True}),
    "pix2pix-student": ("unet", {"ngf": 16}),
    "cyclegan-teacher": ("resnet_gen", {"ngf": 64, "n_blocks": 9}),
    "cyclegan-student-32": ("resnet_gen", {"ngf": 32, "n_blocks": 9}),
    "cyclegan-student-16": ("resnet_gen", {"ngf": 16, "n_blocks": 9}),
}


def preset(name: str) -> Tuple[str, Dict[str, Any]]:
    """``(generator name, kwargs)`` of a preset in :data:`PRESETS` (also the SAGAN ones, see ``sagan.py``).

    Raises:
        ValueError: an unknown preset (lists the accepted ones).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown generator preset {name!r}; accepted: {', '.join(sorted(PRESETS))}")
    arch, kwargs = PRESETS[name]
    return arch, dict(kwargs)


__all__ = ["UNetGenerator", "ResnetGenerator", "PatchGANDiscriminator", "ImageGeneratorBase", "PRESETS", "preset"]
