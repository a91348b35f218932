"""LeNet-style convolutional classifier (KDGAN, Wang et al. 2018, appendix C)."""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor, nn

from kdlab.models.base import MODELS, Classifier, _check_dropout, _check_int, _check_min_size


class LeNet(Classifier):
    """conv(c1, 5x5, 'same') -> ReLU -> maxpool 2 -> conv(c2, 5x5, 'same') -> ReLU -> maxpool 2 -> fc -> ReLU -> fc(K).

    KDGAN appendix C: the MNIST teacher/discriminator has c1, c2 = 32, 64 and fc 1024 (on 28x28x1:
    3,274,634 parameters = 3.12 Mi, KDGAN Table 3); the CIFAR-10 one has 64, 128. The paper gives
    stride 1 but no padding; 'same' padding (2) is what the published code and the 3.12 Mi count use.
    Max-pooling floors odd sizes (28 -> 14 -> 7; 32 -> 16 -> 8).

    Args:
        num_classes: K. in_channels: C. image_size: H = W (>= 4).
        channels: ``(c1, c2)``; default ``(32, 64)`` for 1 input channel, ``(64, 128)`` otherwise.
        fc: width of the hidden fully connected layer (default 1024).
        dropout: drop probability in [0, 1) after the hidden fc ReLU (published code: keep 0.5).

    Input ``[B, C, H, W]`` -> logits ``[B, K]``.
    Features (shapes for 28x28x1): ``conv1`` [32, 28, 28] (after ReLU), ``pool1`` [32, 14, 14],
    ``conv2`` [64, 14, 14] (after ReLU), ``pool2`` [64, 7, 7], ``fc1`` [1024] (after ReLU, before dropout).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        channels: Optional[Sequence[int]] = None,
        fc: int = 1024,
        dropout: float = 0.0,
    ) -> None:
        if channels is None:
            channels = (32, 64) if in_channels == 1 else (64, 128)
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or len(channels) != 2:
            raise ValueError(f"channels must be two positive integers (c1, c2) or None, got {channels!r}")
        c1, c2 = channels
        _check_int("channels[0]", c1, 1)
        _check_int("channels[1]", c2, 1)
        _check_int("fc", fc, 1)
        dropout = _check_dropout(dropout)
        _check_min_size("lenet", image_size, 4)
        super().__init__(
            "lenet", {"channels": [c1, c2], "fc": fc, "dropout": dropout}, num_classes, in_channels, image_size
        )
        # Each conv stage is a Sequential so that its output (the feature) is post-ReLU.
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, c1, 5, stride=1, padding=2), nn.ReLU())
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Sequential(nn.Conv2d(c1, c2, 5, stride=1, padding=2), nn.ReLU())
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten(1)
        s = image_size // 2 // 2
        self.fc1 = nn.Sequential(nn.Linear(c2 * s * s, fc), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(fc, num_classes)
        self.feature_layers = {n: n for n in ("conv1", "pool1", "conv2", "pool2", "fc1")}

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, H, W]`` -> logits ``[B, K]``."""
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.fc1(self.flatten(x))
        return self.fc(self.dropout(x))


@MODELS.register("lenet", help="LeNet conv32-conv64-fc1024 (KDGAN appendix C); kwargs channels, fc, dropout")
def lenet(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
          channels: Optional[Sequence[int]] = None, fc: int = 1024, dropout: float = 0.0) -> LeNet:
    """Build :class:`LeNet`."""
    return LeNet(num_classes, in_channels, image_size, channels=channels, fc=fc, dropout=dropout)
