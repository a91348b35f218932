"""Feature extractors of the generative metrics (FID / KID / IS): a kdlab classifier's penultimate layer
or logits (:class:`ClassifierFeatures`, the offline stand-in for Inception, with the classifier's own
normalisation) and torchmetrics' Inception-v3 (:class:`InceptionExtractor`) when its weights are cached.

Both take images ``[B, C, H, W]`` in ``[0, 1]`` and return ``[B, num_features]`` (torchmetrics'
custom-extractor contract: an int attribute ``num_features``). Imports only torch and torchmetrics.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from kdlab.features import INPUT, capture_features


class ClassifierFeatures(nn.Module):
    """A kdlab classifier as a torchmetrics feature extractor.

    ``forward(images [B, C, H, W] in [0, 1]) -> [B, num_features]``: the images are normalised as the
    classifier was trained (``(x - mean) / std``) and run through it in eval mode under no_grad;
    ``mode="features"`` returns the input of its last ``nn.Linear`` (the penultimate layer, for
    FID/KID), ``mode="logits"`` its logits (for IS; torchmetrics applies the softmax).

    Args:
        classifier: any ``nn.Module`` mapping normalised images to logits with a final ``nn.Linear``.
        mean, std: per-channel normalisation of the classifier's training data ([0, 1] units).
        mode: ``features`` or ``logits``.

    Raises:
        ValueError: unknown mode; a classifier without an ``nn.Linear`` (mode features).
    """

    def __init__(self, classifier: nn.Module, mean: Sequence[float], std: Sequence[float], mode: str = "features") -> None:
        super().__init__()
        if mode not in ("features", "logits"):
            raise ValueError(f"unknown extractor mode {mode!r}; accepted: 'features', 'logits'")
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.mode = mode
        c = len(tuple(mean))
        self.register_buffer("mean", torch.tensor(tuple(mean), dtype=torch.float32).reshape(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std), dtype=torch.float32).reshape(1, c, 1, 1), persistent=False)
        linears = [(n, m) for n, m in classifier.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"classifier {type(classifier).__name__} has no nn.Linear layer to take features from")
        path, last = linears[-1]
        self._feature = path + INPUT  # the last linear layer's input
        self.num_features = int(last.in_features if mode == "features" else last.out_features)

    def train(self, mode: bool = True) -> "ClassifierFeatures":  # always eval (BN/dropout frozen)
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        if self.mode == "logits":
            return self.classifier(x)
        with capture_features(self.classifier, [self._feature]) as store:
            self.classifier(x)
        return store[self._feature].flatten(1)


INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def inception_weights_available() -> bool:
    """True when torchmetrics' FID Inception-v3 weights are in the torch hub cache (no download is tried)."""
    try:
        import torch_fidelity  # noqa: F401  (torchmetrics' Inception needs it)
    except ImportError:
        return False
    return (Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE).is_file()


class InceptionExtractor(nn.Module):
    """torchmetrics' FID Inception-v3 (``pool3`` 2048 features or ``logits_unbiased`` 1008) on [0, 1] images;
    grey images are repeated to 3 channels. Only built when :func:`inception_weights_available`."""

    def __init__(self, mode: str = "features") -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        if mode not in ("features", "logits"):
            raise ValueError(f"unknown extractor mode {mode!r}; accepted: 'features', 'logits'")
        name = "2048" if mode == "features" else "logits_unbiased"
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[name])
        self.num_features = 2048 if mode == "features" else 1008

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        return self.net((images.clamp(0, 1) * 255).to(torch.uint8))
