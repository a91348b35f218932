"""Multi-layer perceptron classifier (KDGAN, Wang et al. 2018, appendix C: the MNIST student MLP)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import Tensor, nn

from kdlab.models.base import MODELS, Classifier, _check_dropout, _check_int


class MLP(Classifier):
    """Fully connected ReLU network ``D -> hidden[0] -> ... -> hidden[-1] -> K`` on the flattened image.

    KDGAN appendix C: "2 fully connected layers with 800 neurons" on 28x28 grey images
    (784-800-800-10, 1,276,810 parameters = 1.22 Mi); KDGAN Table 3 also uses 784-h-h-10 with
    h = 100, 200, 800, 1200 (0.09, 0.19, 1.22, 2.28 Mi, Mi = 2^20 parameters).

    Args:
        num_classes: K. in_channels, image_size: C and H = W; D = C * H * W.
        hidden: widths of the hidden layers (each >= 1; empty = multinomial logistic regression).
        dropout: drop probability in [0, 1) after each hidden ReLU (the published KDGAN code
            uses keep 0.88, i.e. dropout 0.12).

    Input ``[B, C, H, W]`` (any C, H, W matching D) -> logits ``[B, K]``.
    Features: ``fc1``, ``fc2``, ... = hidden activations after the ReLU (before dropout), ``[B, h_i]``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        hidden: Sequence[int] = (800, 800),
        dropout: float = 0.0,
    ) -> None:
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise ValueError(f"hidden must be a list of positive integers, got {hidden!r}")
        hidden = list(hidden)
        for i, h in enumerate(hidden):
            _check_int(f"hidden[{i}]", h, 1)
        dropout = _check_dropout(dropout)
        super().__init__("mlp", {"hidden": hidden, "dropout": dropout}, num_classes, in_channels, image_size)
        d = in_channels * image_size * image_size
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        layers["flatten"] = nn.Flatten(1)
        for i, h in enumerate(hidden, start=1):
            # fc{i} is a Sequential so that its output (the feature) is the post-ReLU activation
            layers[f"fc{i}"] = nn.Sequential(nn.Linear(d, h), nn.ReLU())
            layers[f"drop{i}"] = nn.Dropout(dropout)
            self.feature_layers[f"fc{i}"] = f"body.fc{i}"
            d = h
        self.body = nn.Sequential(layers)
        self.fc = nn.Linear(d, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, H, W]`` -> logits ``[B, K]``."""
        return self.fc(self.body(x))


@MODELS.register("mlp", help="MLP 784-800-800-10 (KDGAN appendix C); kwargs hidden, dropout")
def mlp(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
        hidden: Sequence[int] = (800, 800), dropout: float = 0.0) -> MLP:
    """Build :class:`MLP`."""
    return MLP(num_classes, in_channels, image_size, hidden=hidden, dropout=dropout)
