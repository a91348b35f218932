"""The players of the image-to-image games (Pix2Pix, CycleGAN teachers; image-to-image students): the
image-generator and PatchGAN builders, CycleGAN's history of generated images, and the ``loss`` keys
they share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from kdlab.config import ConfigError, EvalConfig, bounded, choice
from kdlab.models.gan import build_discriminator
from kdlab.ranks import global_rows, world


@dataclass
class TranslationEvalConfig(EvalConfig):
    """``eval`` section of an image-to-image teacher: the run's evaluation keys and those on the test split."""

    extractor: Optional[str] = None  # output domain's kdlab classifier (run dir / .safetensors) for FID/KID and accuracy
    kid_subset_size: int = bounded(1000, ge=1)
    kid_subsets: int = bounded(100, ge=1)
    grid_n: int = bounded(8, ge=1)  # test examples in the sample grid (columns: input, output(s), target)
    sample_seed: int = 0  # seed of KID's subsets


#: old ``loss`` keys of the translation teachers' game and their new places
TRANSLATION_MOVED = {"gan_mode": "objective.generator.gan.mode and objective.discriminator.gan.mode"}


@dataclass
class TranslationGameConfig:
    """Keys of the adversarial game of an image-to-image teacher: loss mode and the PatchGAN's size."""

    ndf: int = bounded(64, gt=0)  # PatchGAN width
    # PatchGAN stride-2 layers; null: follows the image size (patchgan_depth: 256 px 3, 28-47 px 2)
    n_layers: Optional[int] = bounded(None, ge=1, optional=True)
    disc_norm: str = choice("batch", ("batch", "instance"))  # PatchGAN norm: batch (Pix2Pix) | instance (CycleGAN)
    disc_lr: Optional[float] = bounded(None, gt=0, optional=True)  # null: optim.lr


def check_translation_data(spec: Any, method: str, pairing: Optional[str] = None) -> None:
    """Refuse a data set that is no translation task (or of the wrong pairing) before training.

    Raises:
        ConfigError: names ``data.name``, the pairing found and the one ``method`` needs.
    """
    if spec.pairing is None:
        raise ConfigError(f"data.name = {spec.name!r} is a classification data set; method {method!r} needs an "
                          "image-to-image task: edges2fashion (paired), fashion2digits (unpaired), "
                          "paired-folder:<path> or unpaired-folder:<path>")
    if pairing is not None and spec.pairing != pairing:
        raise ConfigError(f"data.name = {spec.name!r} is an {spec.pairing} task; method {method!r} trains on "
                          f"{pairing} data")


def build_image_generator(cfg: Any, in_channels: int, out_channels: int, image_size: int) -> nn.Module:
    """The image-input generator ``model.name`` with ``model.kwargs`` (e.g. ``ngf``), mapping
    ``[B, in_channels, S, S] -> [B, out_channels, S, S]``.

    Raises:
        ConfigError: ``model.name`` is no image-input generator (lists those that are).
    """
    from kdlab.models.gan import build_generator

    image = _image_generators()
    if cfg.model.name not in image:
        raise ConfigError(f"model.name = {cfg.model.name!r} is not an image-to-image generator; accepted: "
                          f"{', '.join(image)}")
    kw = dict(cfg.model.kwargs)
    return build_generator(cfg.model.name, out_channels=out_channels, image_size=image_size,
                           in_channels=in_channels, **kw)


def _image_generators() -> List[str]:
    """Registered generators that take images (their builders have ``in_channels``)."""
    import inspect

    from kdlab.models.gan import GENERATORS

    return [n for n in GENERATORS.names() if "in_channels" in inspect.signature(GENERATORS.get(n)).parameters]


#: the automatic PatchGAN depth keeps a score map of at least this side (a 4x4 grid of patches)
MIN_PATCH_MAP = 4


def patchgan_depth(image_size: int, n_layers: Optional[int] = None) -> int:
    """The PatchGAN's stride-2 layers ``players.n_layers`` for ``image_size`` px images.

    Map side ``image_size // 2**n - 2`` (:class:`kdlab.models.i2i.PatchGANDiscriminator`). ``None`` follows the
    image size: pix2pix's 3 (a 30x30 map of 70 px patches at 256 px) or, on small images, the largest depth
    whose map is at least ``MIN_PATCH_MAP`` x ``MIN_PATCH_MAP`` (28-47 px: 2, a 5x5 map of 34 px patches, the
    small teachers' depth; 8-23 px: 1), else the deepest map of at least 2x2. An explicit depth must leave a
    map of at least 2x2: a 1x1 map is one score for the whole image (3 layers at 28 px: a 70 px patch), not
    a PatchGAN.

    Raises:
        ConfigError: an explicit ``n_layers`` that leaves a map smaller than 2x2, or images too small for any
            (names the accepted range).
    """
    def side(n: int) -> int:
        return image_size // 2 ** n - 2

    fits = max((n for n in range(1, 8) if side(n) >= 2), default=0)
    if n_layers is None:
        auto = [n for n in range(1, 4) if side(n) >= MIN_PATCH_MAP]
        n_layers = max(auto) if auto else fits
    if not 1 <= n_layers <= fits:
        raise ConfigError(f"players.n_layers = {n_layers} leaves no patch on {image_size}x{image_size} images (its score "
                          f"map would be {max(side(n_layers), 0)}x{max(side(n_layers), 0)}: one decision for the whole "
                          f"image, not a PatchGAN); accepted: " + (f"1..{fits}, or null (follows the image size)" if fits
                                                                  else "none: images of at least 8 px"))
    return int(n_layers)


def build_patchgan(in_channels: int, image_size: int, ndf: int, n_layers: Optional[int], norm: str,
                   gate_threshold: Optional[float] = None) -> nn.Module:
    """A PatchGAN judging ``in_channels`` channels (``players.ndf``, ``players.n_layers``, ``players.disc_norm``);
    the depth from :func:`patchgan_depth` (``n_layers`` None: follows the image size). ``gate_threshold``: GCC's
    channel gates (``players.disc_gates``), or None.

    Raises:
        ConfigError: ``players.n_layers`` leaves no patch map on the images (names the accepted range).
    """
    return build_discriminator("patchgan", in_channels=in_channels, image_size=image_size, ndf=int(ndf),
                               n_layers=patchgan_depth(image_size, n_layers), norm=norm,
                               gate_threshold=gate_threshold)


def patchgan_arch(state: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """``{ndf, n_layers, norm}`` of a :class:`kdlab.models.i2i.PatchGANDiscriminator` read off its state_dict
    (``net.0.weight`` is ``[ndf, C, 4, 4]``; ``n_layers + 2`` convolutions; BatchNorm leaves running statistics,
    CycleGAN's InstanceNorm nothing).

    Raises:
        ValueError: the state is no PatchGAN's (names the keys found).
    """
    convs = sorted(int(k.split(".")[1]) for k in state if k.startswith("net.") and k.endswith(".weight")
                   and state[k].dim() == 4)
    if not convs or "net.0.weight" not in state:
        raise ValueError(f"not a PatchGAN discriminator's state (keys {sorted(state)[:6]}...)")
    norm = "batch" if any(k.endswith("running_mean") for k in state) else "instance"
    return {"ndf": int(state["net.0.weight"].shape[0]), "n_layers": len(convs) - 2, "norm": norm}


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al. 2017; Zhu et al. sec. 4): the
    discriminator sees a mix of the newest fakes and older ones, which damps oscillation.

    :meth:`query` of a batch ``[B, C, H, W]`` (detached): while the pool holds fewer than ``size`` images
    each image is stored and returned; afterwards each image is, with probability 1/2, returned as is,
    or swapped with a random stored image (the stored one is returned, the new one kept). ``size = 0``
    returns the batch unchanged. Draws use torch's global generator. Under DDP the pool is the global
    batch's: every rank queries one pool with every rank's images in one-process order
    (:func:`kdlab.ranks.global_rows`; the same draws on every rank) and keeps its rows, so W ranks show
    their discriminators what one process would.
    """

    def __init__(self, size: int = 50) -> None:
        if size < 0:
            raise ValueError(f"players.pool_size = {size} must be >= 0 (0 = no history)")
        self.size = int(size)
        self.images: List[torch.Tensor] = []

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images.detach()
        w, r = world()
        if w > 1:
            return self._query(global_rows(images.detach()))[r::w]
        return self._query(images)

    def _query(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif float(torch.rand(())) > 0.5:
                i = int(torch.randint(0, self.size, ()))
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state_dict(self) -> Dict[str, Any]:
        return {"images": torch.cat(self.images).cpu() if self.images else torch.empty(0)}

    def load_state_dict(self, state: Dict[str, Any], device: Any = "cpu") -> None:
        imgs = state.get("images")
        self.images = [] if imgs is None or imgs.numel() == 0 else [i.unsqueeze(0).to(device) for i in imgs]
