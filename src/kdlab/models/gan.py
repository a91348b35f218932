"""DCGAN / WDCGAN generators and discriminators whose widths scale with the depth scale factor d.

Aguinaldo et al. 2019 ("Compressing GANs using Knowledge Distillation", sec. 3) control the size of
teacher and student generators by one number, the depth scale factor ``d``; "the overall number of
parameters increases approximately linearly to d^2". The paper fragment gives no layer table, so
kdlab follows DCGAN (Radford et al. 2015) and the public reproduction in ``papers/NOTES.md``
(ConvT 100 -> 1024 -> 512 -> 256 -> C with BN and Tanh for d = 256):

* the generator's hidden widths are ``(8d, 4d, 2d, d)`` for 64x64, ``(4d, 2d, d)`` for 32x32 and
  28x28 (the last hidden layer has ``d`` channels); transposed convolutions 4x4 stride 2 (28x28:
  z -> 3x3 -> 7x7 -> 14x14 -> 28x28, the first two with 3x3 kernels), BatchNorm + ReLU after each
  hidden layer, Tanh output in [-1, 1]. Every weight between two hidden layers has
  ``(k * d) * (k' * d) * kernel`` entries, so parameters grow as d^2 (plus a term linear in d from
  the latent projection and the output layer).
* the discriminator mirrors it: 4x4 stride-2 convolutions with widths ``(d, 2d, 4d[, 8d])``,
  LeakyReLU(0.2), one scalar output per image (a logit for the BCE game, a critic value for WGAN).
  ``dcgan`` uses BatchNorm after every hidden layer but the first (DCGAN); ``wdcgan`` ("a slightly
  modified DCGAN more closely resembling the WGAN", paper sec. 3) has no BatchNorm, so the critic of
  a sample does not depend on its batch, which the WGAN gradient penalty needs (Gulrajani et al.
  2017, sec. 4). The two generator names build the same generator (WGAN's DCGAN generator is
  DCGAN's); the name is kept for the checkpoint and the report.

Latent vectors are ``z ~ N(0, I)`` of size ``latent_dim`` (:func:`sample_latent`); generators take
``z`` as ``[B, latent_dim]`` (or ``[B, latent_dim, 1, 1]``).
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from kdlab.registry import Registry, UnknownArgumentError

GENERATORS = Registry("generator")
DISCRIMINATORS = Registry("discriminator")
#: image sizes with a layer plan (H = W)
GAN_IMAGE_SIZES = (28, 32, 64)


def _check_pos_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be an integer > 0, got {value!r}")
    return int(value)


def _check_size(image_size: Any) -> int:
    if image_size not in GAN_IMAGE_SIZES:
        raise ValueError(
            f"image_size {image_size!r} has no DCGAN layer plan; accepted: {', '.join(map(str, GAN_IMAGE_SIZES))}"
        )
    return int(image_size)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN init (Radford et al. 2015, sec. 4): conv weights ~ N(0, 0.02), BN weights ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class GeneratorBase(nn.Module):
    """What every registered generator shares. Subclasses set ``arch``, ``arch_kwargs``, ``out_channels``,
    ``image_size``, ``latent_dim`` and :attr:`output_range` (the interval of their output pixels).

    :attr:`input_kind` says what ``forward`` takes, so a method can feed any registered generator:
    ``"latent"`` (``z [B, latent_dim]``, unconditional GANs) or ``"image"`` (``x [B, in_channels, H, W]``,
    image-to-image translation; those generators set ``in_channels`` and ``latent_dim = None``)."""

    output_range = (-1.0, 1.0)
    input_kind = "latent"

    @property
    def input_shape(self) -> tuple:
        """Shape of one input: ``(latent_dim,)`` (image generators: ``(C_in, S, S)``)."""
        return (self.latent_dim,)

    @property
    def output_shape(self) -> tuple:
        """``(C, S, S)`` of one generated image."""
        return (self.out_channels, self.image_size, self.image_size)

    def latent_4d(self, z: Tensor) -> Tensor:
        """``z [B, latent_dim]`` or ``[B, latent_dim, 1, 1]`` as ``[B, latent_dim, 1, 1]``.

        Raises:
            ValueError: any other shape (names it and latent_dim).
        """
        if z.dim() == 2:
            z = z[:, :, None, None]
        if z.dim() != 4 or z.shape[1] != self.latent_dim or z.shape[2:] != (1, 1):
            raise ValueError(f"z must be [B, {self.latent_dim}] (latent_dim), got shape {tuple(z.shape)}")
        return z

    def config(self) -> Dict[str, Any]:
        """JSON-serialisable description that :func:`build_generator` rebuilds."""
        return {"name": self.arch, "out_channels": self.out_channels, "image_size": self.image_size,
                "kwargs": dict(self.arch_kwargs)}


class DCGenerator(GeneratorBase):
    """DCGAN generator ``z [B, latent_dim] -> image [B, C, S, S]`` in [-1, 1] (Tanh).

    Args:
        d: depth scale factor (> 0): the width of the last hidden layer; the others are 2d, 4d (, 8d).
        latent_dim: size of z (> 0; DCGAN uses 100).
        out_channels: C of the images (1 or 3; any > 0).
        image_size: S in {28, 32, 64}.
        arch: registry name stored for checkpoints (``dcgan`` or ``wdcgan``).

    Raises:
        ValueError: d, latent_dim or out_channels not a positive int; image_size without a plan.
    """

    def __init__(self, d: int = 64, latent_dim: int = 100, out_channels: int = 1, image_size: int = 28,
                 arch: str = "dcgan") -> None:
        super().__init__()
        d = _check_pos_int("d (depth scale factor)", d)
        latent_dim = _check_pos_int("latent_dim", latent_dim)
        out_channels = _check_pos_int("out_channels", out_channels)
        image_size = _check_size(image_size)
        self.arch = str(arch)
        self.arch_kwargs: Dict[str, Any] = {"d": d, "latent_dim": latent_dim}
        self.d, self.latent_dim, self.out_channels, self.image_size = d, latent_dim, out_channels, image_size
        if image_size == 28:
            # (in, out, kernel, stride, padding): 1 -> 3 -> 7 -> 14 -> 28
            plan = [(latent_dim, 4 * d, 3, 1, 0), (4 * d, 2 * d, 3, 2, 0), (2 * d, d, 4, 2, 1)]
        elif image_size == 32:  # 1 -> 4 -> 8 -> 16 -> 32
            plan = [(latent_dim, 4 * d, 4, 1, 0), (4 * d, 2 * d, 4, 2, 1), (2 * d, d, 4, 2, 1)]
        else:  # 64: 1 -> 4 -> 8 -> 16 -> 32 -> 64
            plan = [(latent_dim, 8 * d, 4, 1, 0), (8 * d, 4 * d, 4, 2, 1), (4 * d, 2 * d, 4, 2, 1), (2 * d, d, 4, 2, 1)]
        layers = []
        for cin, cout, k, s, p in plan:
            layers += [nn.ConvTranspose2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(d, out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        """``z [B, latent_dim]`` or ``[B, latent_dim, 1, 1]`` -> images ``[B, C, S, S]`` in [-1, 1]."""
        return self.net(self.latent_4d(z))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, d={self.d}, latent_dim={self.latent_dim}, output={self.output_shape}"


class DCDiscriminator(nn.Module):
    """DCGAN discriminator / WGAN critic ``x [B, C, S, S] -> [B]`` (a logit or a critic value).

    Widths ``(d, 2d, 4d)`` (``(d, 2d, 4d, 8d)`` for 64x64), 4x4 stride-2 convolutions, LeakyReLU(0.2),
    BatchNorm after every hidden layer but the first when ``batchnorm`` (``dcgan``), none for ``wdcgan``;
    a final convolution covering the remaining map gives one value per image.

    Raises:
        ValueError: d or in_channels not a positive int; image_size without a plan.
    """

    def __init__(self, d: int = 64, in_channels: int = 1, image_size: int = 28, batchnorm: bool = True,
                 arch: str = "dcgan") -> None:
        super().__init__()
        d = _check_pos_int("d (depth scale factor)", d)
        in_channels = _check_pos_int("in_channels", in_channels)
        image_size = _check_size(image_size)
        self.arch, self.d, self.in_channels, self.image_size = str(arch), d, in_channels, image_size
        widths = [d, 2 * d, 4 * d] + ([8 * d] if image_size == 64 else [])
        layers = []
        cin = in_channels
        for i, w in enumerate(widths):
            if image_size == 28 and i == 2:  # 7 -> 3 (mirror of the generator's 3 -> 7)
                layers.append(nn.Conv2d(cin, w, 3, 2, 0, bias=not batchnorm))
            else:
                layers.append(nn.Conv2d(cin, w, 4, 2, 1, bias=not batchnorm or i == 0))
            if batchnorm and i > 0:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = w
        final = 3 if image_size == 28 else 4
        layers.append(nn.Conv2d(cin, 1, final, 1, 0))
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, S, S]`` -> ``[B]``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(
                f"discriminator expects images [B, {self.in_channels}, {self.image_size}, {self.image_size}], "
                f"got shape {tuple(x.shape)}"
            )
        return self.net(x).reshape(x.shape[0])


@GENERATORS.register("dcgan", help="DCGAN generator, widths (4d, 2d, d) [64x64: 8d..d], BN + ReLU, Tanh")
def dcgan_generator(d: int = 64, latent_dim: int = 100, out_channels: int = 1, image_size: int = 28) -> DCGenerator:
    return DCGenerator(d, latent_dim, out_channels, image_size, arch="dcgan")


@GENERATORS.register("wdcgan", help="WDCGAN generator (the DCGAN generator used with a WGAN critic)")
def wdcgan_generator(d: int = 64, latent_dim: int = 100, out_channels: int = 1, image_size: int = 28) -> DCGenerator:
    return DCGenerator(d, latent_dim, out_channels, image_size, arch="wdcgan")


@DISCRIMINATORS.register("dcgan", help="DCGAN discriminator with BatchNorm, LeakyReLU(0.2), one logit")
def dcgan_discriminator(d: int = 64, in_channels: int = 1, image_size: int = 28) -> DCDiscriminator:
    return DCDiscriminator(d, in_channels, image_size, batchnorm=True, arch="dcgan")


@DISCRIMINATORS.register("wdcgan", help="WGAN critic: the DCGAN discriminator without BatchNorm (GP-safe)")
def wdcgan_discriminator(d: int = 64, in_channels: int = 1, image_size: int = 28) -> DCDiscriminator:
    return DCDiscriminator(d, in_channels, image_size, batchnorm=False, arch="wdcgan")


def generator_input_kind(name: str) -> str:
    """What registered generator ``name`` takes: its class's :attr:`GeneratorBase.input_kind` (``"latent"`` or
    ``"image"``), read from the factory's return annotation without building it; factories without one:
    ``"latent"`` when they take ``latent_dim``, else ``"image"``.

    Raises:
        UnknownNameError: unknown name (lists the known ones).
    """
    import typing

    factory = GENERATORS.get(name)
    try:
        cls = typing.get_type_hints(factory).get("return")
    except Exception:  # an annotation that does not resolve: fall back on the signature
        cls = None
    if isinstance(cls, type) and issubclass(cls, GeneratorBase):
        return cls.input_kind
    return "latent" if "latent_dim" in inspect.signature(factory).parameters else "image"


def _factory_keywords(factory: Any, fixed: tuple) -> list:
    """The keyword arguments a registered factory takes besides the ``fixed`` ones (channels, size)."""
    return [p for p in inspect.signature(factory).parameters if p not in fixed]


def build_generator(name: str, out_channels: int = 1, image_size: int = 28, **kwargs: Any) -> nn.Module:
    """Build a registered generator (``GENERATORS.names()``); ``kwargs`` are its factory's options
    (``dcgan``/``wdcgan``: d, latent_dim; ``mosaic``: latent_dim, widths, ngf).

    Raises:
        UnknownNameError: unknown name (lists the known ones). TypeError: unknown keyword (lists the
        accepted ones of that generator). ValueError: bad values / image size (names the accepted ones).
    """
    factory = GENERATORS.get(name)
    accepted = _factory_keywords(factory, ("out_channels", "image_size"))
    bad = sorted(set(kwargs) - set(accepted))
    if bad:
        raise UnknownArgumentError(f"generator {name!r} got unknown keyword argument(s) {bad}; accepted: {', '.join(accepted)}")
    return factory(out_channels=out_channels, image_size=image_size, **kwargs)


def build_discriminator(name: str, in_channels: int = 1, image_size: int = 28, **kwargs: Any) -> nn.Module:
    """Build a registered discriminator (``DISCRIMINATORS.names()``); ``kwargs`` are its factory's options
    (``dcgan``/``wdcgan``: d, default 64; ``patch``: widths, kernel, final_kernel, final_stride, ndf).

    Raises:
        UnknownNameError: unknown name. TypeError: unknown keyword (lists the accepted ones).
    """
    factory = DISCRIMINATORS.get(name)
    accepted = _factory_keywords(factory, ("in_channels", "image_size"))
    bad = sorted(set(kwargs) - set(accepted))
    if bad:
        raise UnknownArgumentError(f"discriminator {name!r} got unknown keyword argument(s) {bad}; "
                        f"accepted: {', '.join(accepted)}")
    return factory(in_channels=in_channels, image_size=image_size, **kwargs)


def sample_latent(n: int, latent_dim: int, generator: Optional[torch.Generator] = None,
                  device: Any = None) -> Tensor:
    """``z ~ N(0, I)``: ``[n, latent_dim]`` float32 (drawn on the generator's device, then moved)."""
    gen_dev = generator.device if generator is not None else device
    z = torch.randn(n, latent_dim, generator=generator, device=gen_dev)
    return z.to(device) if device is not None else z
