"""Bottleneck ResNet-101 for 32x32 images: KDGAN's CIFAR-10 teacher (Wang et al. 2018, appendix C)."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from kdlab.models.base import MODELS, Classifier, GlobalAvgPool2d, _check_int, init_weights


class Bottleneck(nn.Module):
    """Post-activation bottleneck (He et al. 2016): 1x1 (w) -> 3x3 (w, stride) -> 1x1 (4w), BN after
    each convolution, ReLU after the first two and after the residual sum; a 1x1 conv + BN projection
    shortcut where the shape changes. ``[B, c_in, H, W] -> [B, 4w, ceil(H/stride), ceil(W/stride)]``."""

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = 4 * width
        self.body = nn.Sequential(
            nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class BottleneckResNet(Classifier):
    """KDGAN appendix C's CIFAR-10 teacher: 3x3 conv(16) stem, then stages of bottleneck blocks
    (1x1 w, 3x3 w, 1x1 4w) with w = 64, 128, 256, 512 and ``blocks`` = (3, 4, 23, 3) (ResNet-101),
    global average pooling, a linear layer. The appendix gives no strides: stages 2-4 start with
    stride 2 (32 -> 16 -> 8 -> 4), as in He et al. 2016. About 42.5M parameters for 10 classes.

    Features: ``layer1``..``layer4`` (after each stage), ``gap`` [2048].
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 blocks: Sequence[int] = (3, 4, 23, 3)) -> None:
        blocks = [int(b) for b in blocks]
        if len(blocks) != 4:
            raise ValueError(f"blocks must be four integers >= 1 (one per stage), got {blocks!r}")
        for i, b in enumerate(blocks):
            _check_int(f"blocks[{i}]", b, 1)
        super().__init__("resnet101_bottleneck", {"blocks": blocks}, num_classes, in_channels, image_size)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        c = 16
        for i, (w, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
            layers = []
            for j in range(n):
                layers.append(Bottleneck(c, w, stride=2 if (j == 0 and i > 1) else 1))
                c = 4 * w
            setattr(self, f"layer{i}", nn.Sequential(*layers))
        self.gap = GlobalAvgPool2d()
        self.fc = nn.Linear(c, num_classes)
        self.feature_layers = {n: n for n in ("layer1", "layer2", "layer3", "layer4", "gap")}
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.gap(x))


@MODELS.register("resnet101_bottleneck", help="bottleneck ResNet-101, KDGAN's CIFAR-10 teacher (appendix C); kwargs blocks")
def resnet101_bottleneck(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                         blocks: Sequence[int] = (3, 4, 23, 3)) -> BottleneckResNet:
    """Build :class:`BottleneckResNet`."""
    return BottleneckResNet(num_classes, in_channels, image_size, blocks=blocks)
