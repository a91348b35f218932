"""VGG-4 and VGG-9 (Srinivas & Fleuret 2018, "Knowledge Transfer with Jacobian Matching", section 10.1)."""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Sequence, Union

from torch import Tensor, nn

from kdlab.models.base import MODELS, Classifier, GlobalAvgPool2d, _check_dropout, init_weights

CFGS = {
    "vgg4": [64, "M", 128, "M", 512, "M"],
    "vgg9": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
}
"""Jacobian paper section 10.1: numbers are 3x3 conv widths, 'M' a 2x2 stride-2 max-pool."""


class VGG(Classifier):
    """VGG-style network: blocks of 3x3 conv (stride 1, pad 1) + BatchNorm + ReLU, 'M' = 2x2/2 max-pool,
    then global average pooling, optional dropout and one linear layer (Jacobian paper section 10.1).

    Choices the paper leaves open, stated here:
      * convolutions have no bias (BatchNorm follows, a bias would be redundant);
      * max-pools use ``ceil_mode=True``, so sizes not divisible by 2^#pools keep a border row/column:
        28x28 in VGG-9 goes 28 -> 14 -> 7 -> 4 -> 2 -> 1 (with floor it would reach 0); on sizes
        divisible by 2^#pools (32x32) ceil and floor agree;
      * He-normal init for convolutions (fan_out), BN weight 1 / bias 0.

    Args:
        cfg: list of widths and "M", e.g. ``CFGS["vgg9"]``.
        num_classes: K. in_channels: C. image_size: H = W.
        dropout: drop probability in [0, 1) before the linear layer (Jacobian paper Table 2 "dropout" rows).
        width: channel multiplier > 0 (each width becomes ``max(1, round(width * c))``).

    Input ``[B, C, H, W]`` -> logits ``[B, K]``.
    Features: ``pool1`` ... ``poolP`` (output of each max-pool, ``[c, ceil(H/2^i), ceil(W/2^i)]``) and
    ``gap`` (``[c_last]``). VGG-9 on 32x32: pool1 [64,16,16], pool2 [128,8,8], pool3 [256,4,4],
    pool4 [512,2,2], pool5 [512,1,1], gap [512]; on 28x28: 14, 7, 4, 2, 1.
    """

    def __init__(
        self,
        cfg: Sequence[Union[int, str]],
        arch: str = "vgg",
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        dropout: float = 0.0,
        width: float = 1.0,
    ) -> None:
        dropout = _check_dropout(dropout)
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ValueError(f"width must be a positive number (channel multiplier), got {width!r}")
        super().__init__(arch, {"dropout": dropout, "width": float(width)}, num_classes, in_channels, image_size)
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        c_in, block, j = in_channels, 1, 0
        for v in cfg:
            if v == "M":
                layers[f"pool{block}"] = nn.MaxPool2d(2, 2, ceil_mode=True)
                self.feature_layers[f"pool{block}"] = f"features.pool{block}"
                block, j = block + 1, 0
            elif isinstance(v, int) and not isinstance(v, bool) and v > 0:
                c_out = max(1, int(round(v * width)))
                j += 1
                layers[f"conv{block}_{j}"] = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(),
                )
                c_in = c_out
            else:
                raise ValueError(f"VGG cfg entries must be positive integers or 'M', got {v!r}")
        self.features = nn.Sequential(layers)
        self.gap = GlobalAvgPool2d()
        self.feature_layers["gap"] = "gap"
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, H, W]`` -> logits ``[B, K]``."""
        return self.fc(self.dropout(self.gap(self.features(x))))


def _factory(name: str):
    def build(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
              dropout: float = 0.0, width: float = 1.0) -> VGG:
        return VGG(CFGS[name], name, num_classes, in_channels, image_size, dropout=dropout, width=width)

    build.__name__ = name
    build.__doc__ = f"Build {name.upper()} :class:`VGG` ({CFGS[name]})."
    return build


for _name, _help in (
    ("vgg4", "VGG-4 [64,M,128,M,512,M] + GAP + fc (Jacobian paper 10.1); kwargs dropout, width"),
    ("vgg9", "VGG-9 [64,M,128,M,256x2,M,512x2,M,512x2,M] + GAP + fc (Jacobian paper 10.1); kwargs dropout, width"),
):
    MODELS.register(_name, help=_help)(_factory(_name))

vgg4 = MODELS.get("vgg4")
vgg9 = MODELS.get("vgg9")
__all__: List[str] = ["VGG", "CFGS", "vgg4", "vgg9"]
