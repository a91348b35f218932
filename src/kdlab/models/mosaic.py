"""MosaicKD's players (Fang et al., NeurIPS 2021, supplement sec. B): a generator with a Sigmoid output
in [0, 1] and a patch discriminator that returns a map of logits, one per (overlapping) patch.

Two layer plans each, chosen by ``widths``:

* ``paper``: supplement Table 2 (generator: Linear -> 8x8x128, BN, LeakyReLU; up, conv3 128->128;
  up, conv3 128->64; conv3 64->C, Sigmoid) and Table 3 (discriminator: conv3 s2 C->64, BN, LeakyReLU;
  conv3 s2 64->128, BN, LeakyReLU; conv3 128->1 with the final stride of Table 4).
* ``code`` (default, the published command; ``papers/NOTES.md``): generator Linear -> 8x8x256, BN (no
  activation), up, conv3 256->128, up, conv3 128->64, conv3 64->C; discriminator conv4 s2 C->128
  (no BN), LeakyReLU, conv4 s2 128->256, BN, LeakyReLU, conv1x1 256->1.

``ngf`` / ``ndf`` (default 64) scale every width: generator (C0, C1, C2) = (2, 2, 1) * ngf (paper) or
(4, 2, 1) * ngf (code); discriminator widths (1, 2) * ndf (paper) or (2, 4) * ndf (code). Larger images get more stages,
as the supplement says ("we add more convolutional layers and upsampling or sampling layers"): the
generator starts at 7x7 for 28 px and 8x8 otherwise and doubles until the image size (extra stages keep
width C1); the discriminator halves until 7x7 / 8x8 (extra stages keep its last width), so at
``final_stride = 1`` its map is 7x7 (28 px) or 8x8 (32/64/128 px).

Convolutions followed by BatchNorm have no bias (BN's shift replaces it). ``code`` follows the published
``engine/models/generator.py`` (``Generator``, ``PatchDiscriminator``) also in its biases (the discriminator's
last 1x1 conv has none) and its initialisation: PyTorch's default (kd_mosaic.py applies no init of its own).
``paper`` keeps a biased last layer and the DCGAN init (the supplement states neither). ``init`` /
``final_bias`` override the plan's choice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from torch import Tensor, nn

from kdlab.models.gan import DISCRIMINATORS, GENERATORS, GeneratorBase, _check_pos_int, dcgan_init

#: image sizes (H = W) with a MosaicKD layer plan
MOSAIC_IMAGE_SIZES = (28, 32, 64, 128)
WIDTH_PLANS = ("paper", "code")
#: ``init``: auto = the plan's (code: PyTorch's default, as the published code; paper: DCGAN), or either explicitly
INITS = ("auto", "default", "dcgan")
# the plan's init and whether the discriminator's last conv has a bias
_PLAN_INIT = {"code": ("default", False), "paper": ("dcgan", True)}
# generator (C0, C1, C2) in units of ngf and whether a LeakyReLU follows the first BN
_G_PLANS = {"paper": ((2, 2, 1), True), "code": ((4, 2, 1), False)}
# discriminator: (widths in units of ndf, BN after the first conv, down-sampling kernel, final kernel)
_D_PLANS = {"paper": ((1, 2), True, 3, 3), "code": ((2, 4), False, 4, 1)}


def _check_size(image_size: Any) -> int:
    if image_size not in MOSAIC_IMAGE_SIZES:
        raise ValueError(f"image_size {image_size!r} has no MosaicKD layer plan; accepted: "
                         f"{', '.join(map(str, MOSAIC_IMAGE_SIZES))}")
    return int(image_size)


def _check_plan(widths: Any) -> str:
    if widths not in WIDTH_PLANS:
        raise ValueError(f"widths {widths!r}; accepted: 'paper' (supplement Tables 2-3) or 'code' (published code)")
    return str(widths)


def _init(module: nn.Module, init: Any, plan: str) -> str:
    """Initialise ``module`` as ``init`` (``auto``: the plan's) says; returns the init used."""
    if init not in INITS:
        raise ValueError(f"init {init!r}; accepted: {', '.join(INITS)}")
    used = _PLAN_INIT[plan][0] if init == "auto" else str(init)
    if used == "dcgan":
        dcgan_init(module)
    return used


def _stages(image_size: int) -> Tuple[int, int]:
    """(side of the first / last feature map, number of x2 stages): 28 = 7 * 2^2, 32/64/128 = 8 * 2^n."""
    start = 7 if image_size == 28 else 8
    return start, (image_size // start).bit_length() - 1


class MosaicGenerator(GeneratorBase):
    """MosaicKD generator ``z [B, latent_dim] -> images [B, C, S, S]`` in [0, 1] (Sigmoid).

    Its images are in pixel units: a method normalises them with the teacher domain's mean/std,
    ``(x - spec.mean) / spec.std``, before the teacher or student sees them (``output_range``).

    Args:
        out_channels: C (> 0). image_size: S in {28, 32, 64, 128}. latent_dim: size of z (paper: 100).
        widths: ``'code'`` (Linear -> 4ngf x s x s, 4ngf -> 2ngf -> ngf) or ``'paper'`` (Table 2:
            2ngf x s x s, 2ngf -> 2ngf -> ngf, LeakyReLU after the first BN).
        ngf: width multiplier (> 0; 64 gives the published widths).
        init: one of :data:`INITS` (auto: PyTorch's default for ``code``, DCGAN for ``paper``).

    Raises:
        ValueError: a non-positive int, an image size, ``widths`` or ``init`` without a plan (lists the accepted).
    """

    output_range = (0.0, 1.0)

    def __init__(self, out_channels: int = 3, image_size: int = 32, latent_dim: int = 100,
                 widths: str = "code", ngf: int = 64, init: str = "auto") -> None:
        super().__init__()
        self.out_channels = _check_pos_int("out_channels", out_channels)
        self.image_size = _check_size(image_size)
        self.latent_dim = _check_pos_int("latent_dim", latent_dim)
        self.ngf = _check_pos_int("ngf", ngf)
        self.widths = _check_plan(widths)
        self.arch = "mosaic"
        self.arch_kwargs: Dict[str, Any] = {"latent_dim": self.latent_dim, "widths": self.widths, "ngf": self.ngf}
        (m0, m1, m2), first_act = _G_PLANS[self.widths]
        c0, c1, c2 = m0 * ngf, m1 * ngf, m2 * ngf
        self.start, n_up = _stages(self.image_size)
        self.project = nn.Linear(self.latent_dim, c0 * self.start ** 2)
        head: List[nn.Module] = [nn.BatchNorm2d(c0)]
        if first_act:
            head.append(nn.LeakyReLU(0.2, inplace=True))
        layers: List[nn.Module] = []
        cin = c0
        for cout in [c1] * (n_up - 1) + [c2]:
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                       nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        layers += [nn.Conv2d(cin, self.out_channels, 3, 1, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*head, *layers)
        self._c0 = c0
        self.init_scheme = _init(self, init, self.widths)

    @property
    def d(self) -> int:
        """The width multiplier under the name GAN reports use for DCGAN's depth scale factor."""
        return self.ngf

    def forward(self, z: Tensor) -> Tensor:
        """``z [B, latent_dim]`` (or ``[B, latent_dim, 1, 1]``) -> images ``[B, C, S, S]`` in [0, 1]."""
        if z.dim() == 4 and z.shape[2:] == (1, 1):
            z = z.flatten(1)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be [B, {self.latent_dim}] (latent_dim), got shape {tuple(z.shape)}")
        h = self.project(z).view(z.shape[0], self._c0, self.start, self.start)
        return self.net(h)

    def extra_repr(self) -> str:
        return f"widths={self.widths!r}, ngf={self.ngf}, latent_dim={self.latent_dim}, output={self.output_shape}"


@dataclass(frozen=True)
class PatchGeometry:
    """Where the cells of a patch discriminator's map look.

    Attributes:
        map_size: side h = w of the logit map.
        patch_size: receptive field of one cell, in input pixels (per side, interior cells).
        jump: distance in input pixels between neighbouring cells (the product of all strides).
    """

    map_size: int
    patch_size: int
    jump: int


class PatchDiscriminator(nn.Module):
    """MosaicKD patch discriminator ``x [B, C, S, S] -> logits [B, 1, h, w]``, one per patch.

    The output is a LOGIT map (no Sigmoid; Table 3's Sigmoid is folded into the loss): use
    BCE-with-logits against a map of ones (real OOD patches) / zeros (generated). The published
    code SUMS that BCE over the map and divides by the batch size (``papers/NOTES.md``).

    Args:
        in_channels: C (> 0). image_size: S in {28, 32, 64, 128}.
        widths: ``'code'`` (conv4 s2 C->2ndf without BN, conv4 s2 2ndf->4ndf + BN, conv1x1 -> 1) or
            ``'paper'`` (Table 3: conv3 s2 C->ndf + BN, conv3 s2 ndf->2ndf + BN, conv3 -> 1).
        kernel: down-sampling kernel, 3 or 4 (None: the plan's: paper 3, code 4); padding 1.
        final_kernel: 1 or 3 (None: the plan's: paper 3, code 1); padding ``final_kernel // 2``.
        final_stride: stride of the prediction layer, 1..4 (Table 4; larger = less patch overlap,
            fewer cells: 8x8 maps become 4x4, 3x3, 2x2 for 2, 3, 4).
        ndf: width multiplier (> 0; 64 gives the published widths).
        init: one of :data:`INITS` (auto: PyTorch's default for ``code``, DCGAN for ``paper``).
        final_bias: whether the prediction layer has a bias (None: the plan's: code no, as published; paper yes).

    Raises:
        ValueError: a non-positive int, an image size, ``widths``, kernel, final stride or init without a plan.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, widths: str = "code", kernel: Any = None,
                 final_kernel: Any = None, final_stride: int = 1, ndf: int = 64, init: str = "auto",
                 final_bias: Any = None) -> None:
        super().__init__()
        self.in_channels = _check_pos_int("in_channels", in_channels)
        self.image_size = _check_size(image_size)
        self.widths = _check_plan(widths)
        self.ndf = _check_pos_int("ndf", ndf)
        mults, first_bn, k_default, fk_default = _D_PLANS[self.widths]
        self.kernel = k_default if kernel is None else kernel
        self.final_kernel = fk_default if final_kernel is None else final_kernel
        if self.kernel not in (3, 4):
            raise ValueError(f"kernel {kernel!r}; accepted: 3 (Table 3), 4 (published code) or None")
        if self.final_kernel not in (1, 3):
            raise ValueError(f"final_kernel {final_kernel!r}; accepted: 1 (published code), 3 (Table 3) or None")
        if final_stride not in (1, 2, 3, 4):
            raise ValueError(f"final_stride {final_stride!r}; accepted: 1, 2, 3, 4 (supplement Table 4)")
        self.final_stride = int(final_stride)
        if final_bias is not None and not isinstance(final_bias, bool):
            raise ValueError(f"final_bias {final_bias!r}; accepted: true, false or None (the plan's)")
        self.final_bias = _PLAN_INIT[self.widths][1] if final_bias is None else final_bias
        self.arch = "patch"
        self.arch_kwargs: Dict[str, Any] = {"widths": self.widths, "kernel": self.kernel,
                                            "final_kernel": self.final_kernel, "final_stride": self.final_stride,
                                            "ndf": self.ndf, "final_bias": self.final_bias}
        _, n_down = _stages(self.image_size)
        w0, w1 = (m * self.ndf for m in mults)
        layers: List[nn.Module] = []
        cin = self.in_channels
        for i, cout in enumerate([w0] + [w1] * (n_down - 1)):
            bn = first_bn or i > 0
            layers.append(nn.Conv2d(cin, cout, self.kernel, 2, 1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = cout
        layers.append(nn.Conv2d(cin, 1, self.final_kernel, self.final_stride, self.final_kernel // 2,
                                bias=self.final_bias))
        self.net = nn.Sequential(*layers)
        self.init_scheme = _init(self, init, self.widths)

    def geometry(self) -> PatchGeometry:
        """Map size, receptive field and jump, walked through this network's convolutions with the conv
        arithmetic ``n' = floor((n + 2p - k) / s) + 1``, ``rf' = rf + (k - 1) * jump``, ``jump' = jump * s``."""
        n, rf, jump = self.image_size, 1, 1
        for m in self.net:
            if isinstance(m, nn.Conv2d):
                k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
                n = (n + 2 * p - k) // s + 1
                rf, jump = rf + (k - 1) * jump, jump * s
        return PatchGeometry(map_size=n, patch_size=rf, jump=jump)

    @property
    def output_shape(self) -> tuple:
        """``(1, h, w)`` of one image's logit map."""
        h = self.geometry().map_size
        return (1, h, h)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, S, S]`` (normalised or [0, 1], as the method feeds both players) -> logits ``[B, 1, h, w]``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(f"patch discriminator expects images [B, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}], got shape {tuple(x.shape)}")
        return self.net(x)

    def extra_repr(self) -> str:
        g = self.geometry()
        return f"widths={self.widths!r}, ndf={self.ndf}, map={g.map_size}x{g.map_size}, patch={g.patch_size}px"


@GENERATORS.register("mosaic", help="MosaicKD generator: Linear -> 8x8, (Upsample, conv3, BN, LeakyReLU) x n, "
                                    "Sigmoid in [0, 1] (widths: code | paper Table 2)")
def mosaic_generator(out_channels: int = 3, image_size: int = 32, latent_dim: int = 100, widths: str = "code",
                     ngf: int = 64, init: str = "auto") -> MosaicGenerator:
    return MosaicGenerator(out_channels, image_size, latent_dim, widths, ngf, init)


@DISCRIMINATORS.register("patch", help="MosaicKD patch discriminator: strided convs -> a [B, 1, h, w] logit map "
                                       "(widths: code | paper Table 3; final_stride 1..4, Table 4)")
def patch_discriminator(in_channels: int = 3, image_size: int = 32, widths: str = "code", kernel: Any = None,
                        final_kernel: Any = None, final_stride: int = 1, ndf: int = 64, init: str = "auto",
                        final_bias: Any = None) -> PatchDiscriminator:
    return PatchDiscriminator(in_channels, image_size, widths, kernel, final_kernel, final_stride, ndf, init, final_bias)


__all__ = ["MosaicGenerator", "PatchDiscriminator", "PatchGeometry", "MOSAIC_IMAGE_SIZES", "WIDTH_PLANS", "INITS"]
