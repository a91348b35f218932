"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", section 4.2)."""
from __future__ import annotations

from torch import Tensor, nn

from kdlab.models.base import (
    MODELS, Classifier, GlobalAvgPool2d, _check_int, init_weights, register_pattern,
)


class BasicBlock(nn.Module):
    """Post-activation basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    ``shortcut`` is the identity, or a 1x1 convolution (with the block's stride) + BatchNorm when the
    channel count or the resolution changes (projection shortcut, option B of He et al.; RepDistiller's
    choice). ``[B, c_in, H, W] -> [B, c_out, ceil(H/stride), ceil(W/stride)]``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # out-of-place add: an in-place one would overwrite what a hook on bn2 captured
        return self.relu2(out + self.shortcut(x))


class CifarResNet(Classifier):
    """ResNet-{6n+2} for small images: 3x3 conv(16) + BN + ReLU, three stages of n basic blocks with
    16, 32, 64 channels (the 2nd and 3rd start with stride 2), global average pooling, linear layer.

    He et al. 2016 section 4.2 (resnet20: 0.27M, resnet32: 0.46M, resnet56: 0.85M, resnet110: 1.7M
    parameters for 10 classes); projection (1x1 conv + BN) shortcuts where the shape changes, as in
    RepDistiller, so counts are a few thousand above He et al.'s parameter-free option A.
    The stem adapts to ``in_channels`` (works on 28x28x1: stages at 28, 14, 7).

    Args:
        depth: 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...).
        num_classes: K. in_channels: C. image_size: H = W.

    Input ``[B, C, H, W]`` -> logits ``[B, K]``.
    Features (after each stage's last ReLU): ``layer1`` [16, H, W], ``layer2`` [32, H/2, W/2],
    ``layer3`` [64, H/4, W/4] (sizes rounded up), ``gap`` [64].
    """

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> None:
        _check_int("depth", depth, 8)
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
        super().__init__(f"resnet{depth}", {}, num_classes, in_channels, image_size)
        n = (depth - 2) // 6
        self.depth = depth
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        c = 16
        for i, (c_out, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(c, c_out, stride if b == 0 else 1))
                c = c_out
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.gap = GlobalAvgPool2d()
        self.fc = nn.Linear(64, num_classes)
        self.feature_layers = {n_: n_ for n_ in ("layer1", "layer2", "layer3", "gap")}
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, H, W]`` -> logits ``[B, K]``."""
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.gap(x))


def resnet(depth: int, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> CifarResNet:
    """Build :class:`CifarResNet` of the given depth (6n + 2); used for any ``resnet{depth}`` name."""
    return CifarResNet(depth, num_classes, in_channels, image_size)


def _factory(depth: int):
    def build(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> CifarResNet:
        return CifarResNet(depth, num_classes, in_channels, image_size)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"Build CIFAR ResNet-{depth} (He et al. 2016), n = {(depth - 2) // 6} blocks per stage."
    return build


_PUBLISHED = {20: "0.27M", 32: "0.46M", 56: "0.85M", 110: "1.7M"}
for _d, _p in _PUBLISHED.items():
    MODELS.register(f"resnet{_d}", help=f"CIFAR ResNet-{_d} (He et al. 2016), {_p} params for 10 classes")(
        _factory(_d)
    )

register_pattern(r"resnet(\d+)", resnet)

resnet20 = MODELS.get("resnet20")
resnet32 = MODELS.get("resnet32")
resnet56 = MODELS.get("resnet56")
resnet110 = MODELS.get("resnet110")
