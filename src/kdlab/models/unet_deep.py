"""OMGD's deeper U-Net teacher (Ren et al. 2021, "Online Multi-Granularity Distillation"): the pix2pix U-Net
with two residual blocks after every encoder stage and before every decoder stage.

Source: bytedance/OMGD ``models/modules/unet_architecture/unet_deepest_generator.py``
(``UnetDeepestGenerator``, ``--teacher_netG_d unet_deepest_256`` at ``--teacher_ngf_d 16`` in
``scripts/unet_pix2pix/edges2shoes/distill.sh``): in each ``UnetSkipConnectionBlock``

* outermost: ``down = [downconv, RB(inner), RB(inner)]``, ``up = [RB(2 inner), RB(2 inner), ReLU, upconv, Tanh]``;
* middle: ``down = [LeakyReLU, downconv, norm, RB(inner), RB(inner)]``, ``up = [ReLU, upconv, norm, RB(outer),
  RB(outer)]`` (+ dropout);
* innermost: as the plain U-Net (no blocks).

``RB(d)`` (:class:`DeepResnetBlock`, OMGD's ``ResnetBlock`` of that file): ``x + body(x)`` with body =
reflect-pad 1, 1x1 conv d -> 4d, norm, ReLU, 3x3 conv 4d -> 4d (no padding), norm, ReLU, 1x1 conv 4d -> d,
norm, ReLU, reflect-pad 1, 3x3 conv d -> d, norm. Everything else (widths, skips, padding of odd sizes,
named features) is :class:`kdlab.models.i2i.UNetGenerator`'s.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from kdlab.models.gan import GENERATORS
from kdlab.models.i2i import UNetGenerator, _norm, init_normal


class DeepResnetBlock(nn.Module):
    """OMGD's bottleneck residual block ``x + body(x)`` on a map [B, d, H, W] (H, W >= 2: reflect padding)."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        d, bias = int(channels), norm == "instance"
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(d, 4 * d, 1, bias=bias), _norm(norm, 4 * d), nn.ReLU(),
            nn.Conv2d(4 * d, 4 * d, 3, bias=bias), _norm(norm, 4 * d), nn.ReLU(),
            nn.Conv2d(4 * d, d, 1, bias=bias), _norm(norm, d), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(d, d, 3, bias=bias), _norm(norm, d))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class UNetDeepGenerator(UNetGenerator):
    """OMGD's deeper U-Net ``x [B, in_channels, H, W] -> [B, out_channels, H, W]`` in [-1, 1].

    Args: as :class:`kdlab.models.i2i.UNetGenerator` (OMGD's deeper teacher: ngf 16, BatchNorm), plus
    ``blocks``: residual blocks per side of each non-innermost stage (OMGD 2).

    Raises:
        ValueError: as :class:`UNetGenerator`, or ``blocks`` < 1.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, image_size: int = 256, ngf: int = 64,
                 num_downs: Optional[int] = None, norm: str = "batch", dropout: bool = False, blocks: int = 2) -> None:
        super().__init__(in_channels, out_channels, image_size, ngf, num_downs, norm, dropout)
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"blocks {blocks!r}; accepted: an integer >= 1 (OMGD: 2)")
        self.arch = "unet_deep"
        self.arch_kwargs["blocks"] = self.blocks = int(blocks)
        n = self.num_downs
        widths = [self.ngf * min(2 ** i, 8) for i in range(n)]
        for i in range(n - 1):  # the innermost stage has no blocks
            rb = lambda c: [DeepResnetBlock(c, self.norm) for _ in range(self.blocks)]  # noqa: E731
            self.downs[i].extend(rb(widths[i]))
            up = list(self.ups[i])
            if i == 0:  # outermost: the blocks act on the concatenation, before ReLU-upconv-Tanh
                self.ups[i] = nn.Sequential(*rb(2 * widths[i]), *up)
            else:  # after upconv + norm, on the stage's outer width; pix2pix's dropout stays last
                tail = [m for m in up if isinstance(m, nn.Dropout)]
                head = [m for m in up if not isinstance(m, nn.Dropout)]
                self.ups[i] = nn.Sequential(*head, *rb(widths[i - 1]), *tail)
        init_normal(self)


@GENERATORS.register("unet_deep", help="OMGD's deeper U-Net teacher: the pix2pix U-Net with 2 bottleneck residual "
                                       "blocks per side of each stage")
def unet_deep_generator(out_channels: int = 3, image_size: int = 256, in_channels: int = 3, ngf: int = 64,
                        num_downs: Optional[int] = None, norm: str = "batch", dropout: bool = False,
                        blocks: int = 2) -> UNetDeepGenerator:
    return UNetDeepGenerator(in_channels, out_channels, image_size, ngf, num_downs, norm, dropout, blocks)
