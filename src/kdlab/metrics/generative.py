"""Generative metrics: FID, KID and Inception Score through torchmetrics with a pluggable feature
extractor, the variance of the Laplacian (blur), and sample grids.

Images here are float tensors ``[B, C, H, W]`` in ``[0, 1]`` (a generator's Tanh output ``y`` maps to
``(y + 1) / 2``). A feature extractor is any ``nn.Module`` taking such images and returning
``[B, num_features]``, with an int attribute ``num_features`` (torchmetrics' custom-extractor
contract). Where Inception-v3 weights cannot be downloaded, kdlab uses a classifier trained on the
same data set (:class:`ClassifierFeatures`): its penultimate layer (the input of its last Linear
layer) for FID/KID and its logits (softmax inside torchmetrics) for IS, identified by the sha256 of
its checkpoint in every report (``papers/NOTES.md``: never compare FIDs across extractors).

Two ways to compute the same numbers:

* :func:`frechet_distance`, :func:`kernel_inception_distance`, :func:`inception_score` hand the
  extractor to torchmetrics as is (one call each);
* :class:`FeatureSet` + :func:`fid_from_features` etc. run the extractor once per image set and feed
  the features to the same torchmetrics classes through an identity extractor, so one pass over
  10,000 images serves FID, KID, IS and the student-vs-teacher FID.

Imports only torch, torchvision and torchmetrics (never kdlab.data / engine / methods).
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .extractors import ClassifierFeatures, InceptionExtractor, inception_weights_available  # noqa: F401 (public here)

__all__ = [
    "ClassifierFeatures",
    "FeatureSet",
    "frechet_distance",
    "kernel_inception_distance",
    "inception_score",
    "fid_from_features",
    "kid_from_features",
    "is_from_logits",
    "variance_of_laplacian",
    "to_grayscale_255",
    "generate_images",
    "generator_batches",
    "unit_range",
    "save_grid",
    "inception_weights_available",
    "InceptionExtractor",
]


def _check_images(x: Tensor, name: str = "images") -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor [B, C, H, W] with values in [0, 1], got {shape}")


class _Precomputed(nn.Module):
    """Identity "extractor": torchmetrics receives features that were computed already."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return x


@contextlib.contextmanager
def _seeded(seed: Optional[int]):
    """Fix torch's global RNG (torchmetrics' KID subsets and IS permutation use it) inside the block."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def _batches(x: Tensor, batch_size: int) -> Iterable[Tensor]:
    for i in range(0, x.shape[0], batch_size):
        yield x[i:i + batch_size]


def _fid_metric(extractor: nn.Module):
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=extractor, reset_real_features=True, normalize=True,
                                    sync_on_compute=False).double()


def frechet_distance(real: Tensor, fake: Tensor, extractor: nn.Module, batch_size: int = 500) -> float:
    """FID (Heusel et al. 2017) between two image sets through torchmetrics with ``extractor``:

    ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))`` of the extractor's features (float64).

    Args:
        real, fake: [N, C, H, W] in [0, 1] (N >= 2 each). extractor: see the module docstring.
    Raises:
        ValueError: bad image tensors, fewer than 2 images in a set.
    """
    _check_images(real, "real")
    _check_images(fake, "fake")
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {real.shape[0]} real and {fake.shape[0]} fake")
    metric = _fid_metric(extractor)
    for b in _batches(real, batch_size):
        metric.update(b, real=True)
    for b in _batches(fake, batch_size):
        metric.update(b, real=False)
    return float(metric.compute())


def _check_kid(n_real: int, n_fake: int, subset_size: int, subsets: int) -> None:
    for name, v in (("kid_subset_size", subset_size), ("kid_subsets", subsets)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if min(n_real, n_fake) < subset_size:
        raise ValueError(
            f"KID subset size {subset_size} is larger than the samples available ({n_real} real, {n_fake} "
            f"generated); lower kid_subset_size to at most {min(n_real, n_fake)} or use more samples"
        )


def kernel_inception_distance(real: Tensor, fake: Tensor, extractor: nn.Module, subset_size: int = 1000,
                              subsets: int = 100, seed: Optional[int] = 0, batch_size: int = 500) -> Tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
    ``k(x, y) = (x.y / D + 1)^3``, averaged over ``subsets`` random subsets of ``subset_size`` per set.

    Returns: ``(mean, std)`` over the subsets (torchmetrics; subsets drawn from a generator seeded by ``seed``).
    Raises: ValueError: ``subset_size`` larger than either set (names both counts), bad arguments.
    """
    _check_images(real, "real")
    _check_images(fake, "fake")
    _check_kid(real.shape[0], fake.shape[0], subset_size, subsets)
    metric = _kid_metric(extractor, subsets, subset_size)
    for b in _batches(real, batch_size):
        metric.update(b, real=True)
    for b in _batches(fake, batch_size):
        metric.update(b, real=False)
    with _seeded(seed):
        mean, std = metric.compute()
    return float(mean), float(std)


def _kid_metric(extractor: nn.Module, subsets: int, subset_size: int):
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():  # "will save all extracted features": intended here
        warnings.simplefilter("ignore", UserWarning)
        return KernelInceptionDistance(feature=extractor, subsets=subsets, subset_size=subset_size,
                                       reset_real_features=True, normalize=True, sync_on_compute=False)


def _is_metric(classifier: nn.Module, splits: int):
    from torchmetrics.image.inception import InceptionScore

    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"IS splits must be an integer >= 1, got {splits!r}")
    with warnings.catch_warnings():  # "will save all extracted features": intended here
        warnings.simplefilter("ignore", UserWarning)
        # normalize=False: a custom extractor gets the float images as they are (True would cast to uint8)
        return InceptionScore(feature=classifier, splits=splits, normalize=False, sync_on_compute=False)


def inception_score(images: Tensor, classifier: nn.Module, splits: int = 10, seed: Optional[int] = 0,
                    batch_size: int = 500) -> Tuple[float, float]:
    """Inception Score (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` per split, through torchmetrics.

    The paper (eq. 5) calls it the cross entropy between p(y) and p(y|x); kdlab computes the standard
    definition above (the one of every published IS number), which is K for confident predictions
    spread evenly over K classes and 1 for a constant prediction. ``classifier`` returns logits
    ``[B, K]`` (softmax inside torchmetrics), e.g. :class:`ClassifierFeatures` with ``mode="logits"``.

    Returns: ``(mean, std)`` over ``splits`` random equal parts (std 0 for one split).
    Raises: ValueError: bad images, ``splits`` < 1 or more splits than images.
    """
    _check_images(images)
    if images.shape[0] < splits:
        raise ValueError(f"IS with {splits} splits needs at least {splits} images, got {images.shape[0]}")
    metric = _is_metric(classifier, splits)
    for b in _batches(images, batch_size):
        metric.update(b)
    with _seeded(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # std of one split
        mean, std = metric.compute()
    return float(mean), (0.0 if splits == 1 else float(std))


# --------------------------------------------------------------------------------------- features once


@dataclass
class FeatureSet:
    """Extractor outputs of one image set: ``features [N, D]`` (FID/KID), ``logits [N, K]`` (IS) or None,
    and the per-image variance of the Laplacian ``vol [N]``."""

    features: Tensor
    logits: Optional[Tensor]
    vol: Tensor

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    @classmethod
    def from_batches(cls, batches: Iterable[Tensor], extractor: Optional[nn.Module],
                     classifier: Optional[nn.Module] = None, device: Any = "cpu") -> "FeatureSet":
        """Run ``extractor`` (and ``classifier``) over image batches ``[B, C, H, W]`` in [0, 1]."""
        feats, logits, vols = [], [], []
        for b in batches:
            _check_images(b)
            b = b.to(device)
            if extractor is not None:
                feats.append(extractor(b).double().cpu())
            if classifier is not None:
                logits.append(classifier(b).double().cpu())
            vols.append(variance_of_laplacian(b).cpu())
        if not vols:
            raise ValueError("no images: the image set is empty")
        f = torch.cat(feats) if feats else torch.zeros(sum(v.shape[0] for v in vols), 0, dtype=torch.float64)
        return cls(f, torch.cat(logits) if logits else None, torch.cat(vols))

    @classmethod
    def cat(cls, parts: Sequence["FeatureSet"]) -> "FeatureSet":
        """The sets ``parts`` (e.g. built batch by batch) as one, rows in order.

        Raises:
            ValueError: no parts.
        """
        if not parts:
            raise ValueError("no images: the image set is empty")
        logits = None if parts[0].logits is None else torch.cat([p.logits for p in parts])
        return cls(torch.cat([p.features for p in parts]), logits, torch.cat([p.vol for p in parts]))


def fid_from_features(real: FeatureSet, fake: FeatureSet) -> float:
    """FID of :func:`frechet_distance` from precomputed features (torchmetrics, identity extractor)."""
    if real.n < 2 or fake.n < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {real.n} and {fake.n}")
    metric = _fid_metric(_Precomputed(real.features.shape[1]))
    metric.update(real.features, real=True)
    metric.update(fake.features, real=False)
    return float(metric.compute())


def kid_from_features(real: FeatureSet, fake: FeatureSet, subset_size: int = 1000, subsets: int = 100,
                      seed: Optional[int] = 0) -> Tuple[float, float]:
    """KID of :func:`kernel_inception_distance` from precomputed features."""
    _check_kid(real.n, fake.n, subset_size, subsets)
    metric = _kid_metric(_Precomputed(real.features.shape[1]), subsets, subset_size)
    metric.update(real.features, real=True)
    metric.update(fake.features, real=False)
    with _seeded(seed):
        mean, std = metric.compute()
    return float(mean), float(std)


def is_from_logits(logits: Tensor, splits: int = 10, seed: Optional[int] = 0) -> Tuple[float, float]:
    """IS of :func:`inception_score` from precomputed logits ``[N, K]``."""
    if logits is None:
        raise ValueError("IS needs classifier logits; none were computed for this image set")
    if logits.shape[0] < splits:
        raise ValueError(f"IS with {splits} splits needs at least {splits} images, got {logits.shape[0]}")
    metric = _is_metric(_Precomputed(logits.shape[1]), splits)
    metric.update(logits)
    with _seeded(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # std of one split
        mean, std = metric.compute()
    return float(mean), (0.0 if splits == 1 else float(std))


# --------------------------------------------------------------------------------------- blur, images

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def to_grayscale_255(images: Tensor) -> Tensor:
    """``[B, C, H, W]`` in [0, 1] -> ``[B, 1, H, W]`` in [0, 255] (float): grey images are scaled,
    RGB converted with ITU-R BT.601 weights 0.299 R + 0.587 G + 0.114 B (OpenCV's ``COLOR_RGB2GRAY``)."""
    _check_images(images)
    x = images.to(torch.float64 if images.dtype == torch.float64 else torch.float32).clamp(0, 1) * 255.0
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"grayscale conversion needs 1 or 3 channels, got {x.shape[1]}")
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def variance_of_laplacian(images: Tensor) -> Tensor:
    """Blur measure of Aguinaldo et al. (sec. 4; Pech-Pacheco et al. 2000): per image, the variance of
    its Laplacian on the grayscale image in [0, 255].

    The Laplacian is OpenCV's ``cv2.Laplacian(gray, CV_64F)`` (3x3 kernel [[0,1,0],[1,-4,1],[0,1,0]],
    border reflected without repeating the edge, BORDER_REFLECT_101); the variance is the population
    variance (ddof 0, as ``numpy.var``) over the H x W pixels. Sharper images score higher.

    Args: images: [B, C, H, W] in [0, 1] (C = 1 or 3), H, W >= 2.
    Returns: [B] float tensor.
    """
    g = to_grayscale_255(images)
    if g.shape[-1] < 2 or g.shape[-2] < 2:
        raise ValueError(f"images must be at least 2x2 for the Laplacian, got {tuple(images.shape[-2:])}")
    k = _LAPLACIAN.to(dtype=g.dtype, device=g.device).reshape(1, 1, 3, 3)
    lap = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="reflect"), k)
    return lap.flatten(1).var(dim=1, unbiased=False)


def unit_range(images: Tensor) -> Tensor:
    """A generator's Tanh images in [-1, 1] as [0, 1] images, ``((y + 1) / 2).clamp(0, 1)``: the input every
    metric network here takes (:class:`ClassifierFeatures` then applies the classifier's own mean/std)."""
    return ((images + 1.0) / 2.0).clamp(0, 1)


def generator_batches(generator: nn.Module, n: int, latent_dim: int, seed: int = 0, batch_size: int = 500,
                      device: Any = "cpu") -> Iterable[Tensor]:
    """``n`` images of ``generator`` (Tanh output in [-1, 1]) as batches in [0, 1], from fixed latents:
    ``z ~ N(0, I)`` drawn on the CPU from ``torch.Generator().manual_seed(seed)``, so every generator with the
    same ``latent_dim`` sees the same z on any device (teacher vs student on the same z)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of samples must be an integer >= 1, got {n!r}")
    g = torch.Generator().manual_seed(int(seed))
    was_training = generator.training
    generator.eval()
    try:
        for i in range(0, n, batch_size):
            z = torch.randn(min(batch_size, n - i), latent_dim, generator=g).to(device)
            with torch.no_grad():  # not around the yield: grad mode is thread state, the caller must keep its own
                out = unit_range(generator(z).float())
            yield out
    finally:
        generator.train(was_training)


def generate_images(generator: nn.Module, n: int, latent_dim: int, seed: int = 0, batch_size: int = 500,
                    device: Any = "cpu") -> Tensor:
    """All of :func:`generator_batches` as one CPU tensor ``[n, C, H, W]`` in [0, 1]."""
    return torch.cat([b.cpu() for b in generator_batches(generator, n, latent_dim, seed, batch_size, device)])


def save_grid(images: Tensor, path: Any, nrow: int = 8, padding: int = 2) -> Path:
    """Save ``images [B, C, H, W]`` in [0, 1] as one PNG grid (``torchvision.utils.make_grid``/``save_image``)."""
    from torchvision.utils import save_image

    _check_images(images)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    save_image(images.detach().float().cpu().clamp(0, 1), str(tmp), nrow=nrow, padding=padding)
    tmp.replace(path)
    return path
