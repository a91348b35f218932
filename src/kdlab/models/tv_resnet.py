"""ImageNet-style ResNets (He et al. 2016, torchvision's ``resnet18`` / ``resnet34``) as kdlab classifiers:
the Jacobian paper's transfer teacher (ResNet-34, section 5.1.1, Table 4) at small image sizes.

The stem (7x7 stride-2 conv, 3x3 stride-2 max pool) divides the side by 4 before ``layer1``, and
``layer2``..``layer4`` halve it again, so a 64 px input gives 16, 8, 4, 2: the four feature depths of
Table 4 match VGG-9's ``pool2``..``pool5`` in spatial size.
"""
from __future__ import annotations

from torch import Tensor, nn

from kdlab.models.base import MODELS, Classifier, GlobalAvgPool2d

_BUILDERS = {"resnet18_imagenet": "resnet18", "resnet34_imagenet": "resnet34"}


class ImageNetResNet(Classifier):
    """torchvision's ResNet-18 / -34 (random init) with ``in_channels`` input channels and K logits.

    Args:
        arch: ``"resnet18_imagenet"`` or ``"resnet34_imagenet"``.
        num_classes: K. in_channels: C. image_size: H = W (any; below 32 the deepest stages are 1x1).

    Input ``[B, C, H, W]`` -> logits ``[B, K]``.
    Features (after each stage): ``layer1`` [64, H/4, W/4], ``layer2`` [128, H/8, W/8], ``layer3``
    [256, H/16, W/16], ``layer4`` [512, H/32, W/32] (sizes rounded up), ``gap`` [512].

    Raises:
        ValueError: unknown ``arch``.
    """

    def __init__(self, arch: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 224) -> None:
        if arch not in _BUILDERS:
            raise ValueError(f"unknown ImageNet ResNet {arch!r}; accepted: {', '.join(_BUILDERS)}")
        super().__init__(arch, {}, num_classes, in_channels, image_size)
        import torchvision

        net = getattr(torchvision.models, _BUILDERS[arch])(weights=None, num_classes=num_classes)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.gap = GlobalAvgPool2d()
        self.fc = net.fc
        self.feature_layers = {n: n for n in ("layer1", "layer2", "layer3", "layer4", "gap")}

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, H, W]`` -> logits ``[B, K]``."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.gap(x))


def _factory(arch: str):
    def build(num_classes: int = 10, in_channels: int = 3, image_size: int = 224) -> ImageNetResNet:
        return ImageNetResNet(arch, num_classes, in_channels, image_size)

    build.__name__ = arch
    build.__doc__ = f"Build torchvision's {_BUILDERS[arch]} as a kdlab classifier (:class:`ImageNetResNet`)."
    return build


for _arch, _tv in _BUILDERS.items():
    MODELS.register(_arch, help=f"ImageNet-style {_tv} (torchvision, random init; stem /4, features /4../32)")(_factory(_arch))
