"""Wide Residual Networks (Zagoruyko & Komodakis 2016, "Wide Residual Networks")."""
from __future__ import annotations

from torch import Tensor, nn

from kdlab.models.base import (
    MODELS, Classifier, GlobalAvgPool2d, _check_dropout, _check_int, init_weights, register_pattern,
)


class WideBasic(nn.Module):
    """Pre-activation wide basic block B(3,3):
    ``conv2(dropout(relu(bn2(conv1(a))))) + shortcut``, ``a = relu(bn1(x))``.

    The shortcut is ``x`` when shapes agree, else a 1x1 convolution (with the stride) applied to the
    pre-activated ``a`` (as in the authors' code). Dropout sits between the two convolutions (WRN
    paper section 2.4). ``[B, c_in, H, W] -> [B, c_out, ceil(H/stride), ceil(W/stride)]``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.equal = c_in == c_out and stride == 1
        self.shortcut = nn.Identity() if self.equal else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a = self.relu1(self.bn1(x))
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(a)))))
        return out + self.shortcut(x if self.equal else a)


class WideResNet(Classifier):
    """WRN-D-W: 3x3 conv(16), three groups of n = (D - 4) / 6 pre-activation wide basic blocks with
    16W, 32W, 64W channels (groups 2 and 3 start with stride 2), BN + ReLU, global average pooling,
    linear layer (Zagoruyko & Komodakis 2016, Table 1).

    WRN-40-2 has 2.24M parameters for 10 classes (2.26M for 100), WRN-16-1 0.175M (0.18M for 100),
    WRN-28-10 36.5M. The stem adapts to ``in_channels``.

    Args:
        depth: D with (D - 4) % 6 == 0, D >= 10. width: W >= 1.
        num_classes: K. in_channels: C. image_size: H = W.
        dropout: drop probability in [0, 1) between the convolutions of each block.

    Input ``[B, C, H, W]`` -> logits ``[B, K]``.
    Features: ``block1`` [16W, H, W], ``block2`` [32W, H/2, W/2], ``block3`` [64W, H/4, W/4] (outputs of
    each group, before the next pre-activation; sizes rounded up) and ``gap`` [64W] (after the final
    BN + ReLU).
    """

    def __init__(
        self,
        depth: int,
        width: int,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        dropout: float = 0.0,
    ) -> None:
        _check_int("depth", depth, 10)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must satisfy (depth - 4) % 6 == 0 (10, 16, 22, 28, 40, ...), got {depth}")
        _check_int("width", width, 1)
        dropout = _check_dropout(dropout)
        super().__init__(f"wrn_{depth}_{width}", {"dropout": dropout}, num_classes, in_channels, image_size)
        n = (depth - 4) // 6
        self.depth, self.width = depth, width
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        c = 16
        for i, (c_out, stride) in enumerate(((16 * width, 1), (32 * width, 2), (64 * width, 2)), start=1):
            blocks = []
            for b in range(n):
                blocks.append(WideBasic(c, c_out, stride if b == 0 else 1, dropout))
                c = c_out
            setattr(self, f"block{i}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.gap = GlobalAvgPool2d()
        self.fc = nn.Linear(c, num_classes)
        self.feature_layers = {n_: n_ for n_ in ("block1", "block2", "block3", "gap")}
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, H, W]`` -> logits ``[B, K]``."""
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.gap(self.relu(self.bn(x))))


def wrn(depth: int, width: int, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
        dropout: float = 0.0) -> WideResNet:
    """Build :class:`WideResNet` WRN-depth-width; used for any ``wrn_{depth}_{width}`` name."""
    return WideResNet(depth, width, num_classes, in_channels, image_size, dropout=dropout)


def _factory(depth: int, width: int):
    def build(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, dropout: float = 0.0) -> WideResNet:
        return WideResNet(depth, width, num_classes, in_channels, image_size, dropout=dropout)

    build.__name__ = f"wrn_{depth}_{width}"
    build.__doc__ = f"Build WRN-{depth}-{width} (Zagoruyko & Komodakis 2016)."
    return build


for _d, _w in ((16, 1), (16, 2), (40, 1), (40, 2), (28, 10)):
    MODELS.register(f"wrn_{_d}_{_w}", help=f"Wide ResNet WRN-{_d}-{_w} (Zagoruyko & Komodakis 2016); kwarg dropout")(
        _factory(_d, _w)
    )

register_pattern(r"wrn_(\d+)_(\d+)", wrn)
