"""``skimage-patches``: square tiles cut from the natural photographs shipped inside scikit-image.

A real out-of-domain image source for knowledge transfer when the teacher's own training data is
unavailable (tiles of natural images, as in MosaicKD's OOD setting); the label of a tile is the
index of its source photograph (the class names are the photo names in :data:`PHOTOS`).

Only photographs whose files ship inside the scikit-image package are used (no ``pooch`` download:
``skimage.data.eagle``, ``lily``, ``brain``, ``kidney`` ... are fetched on demand and are excluded).
Each photo is made RGB (grey ones replicated to 3 channels), its longer side brought down to at
most :data:`MAX_SIDE` pixels (so the large hubble and motorcycle photos do not dominate), and then
tiled at three scales (the photo resized by 1, 1/2 and 1/4; bilinear, antialiased) with tiles of
side S and stride S/2. A photo smaller than S at some scale contributes no tiles at that scale. At
the default S = 32 that gives 13,090 tiles (11,781 train, 1,309 test). The tiles are enumerated photo by photo, scale by
scale, row-major; every 10th (positions 9, 19, 29, ...) is the 'test' split, the rest 'train'.
Neighbouring tiles overlap by half, so test tiles overlap training tiles: this is a transfer
source, not a benchmark.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from kdlab.data.paths import DataNotFoundError

#: (class name, ``skimage.data`` function) of every photograph used; index = label. All ship
#: inside scikit-image (verified offline, without pooch).
PHOTOS: List[Tuple[str, str]] = [
    ("astronaut", "astronaut"), ("brick", "brick"), ("camera", "camera"), ("chelsea", "chelsea"),
    ("coffee", "coffee"), ("coins", "coins"), ("grass", "grass"), ("gravel", "gravel"),
    ("hubble_deep_field", "hubble_deep_field"), ("immunohistochemistry", "immunohistochemistry"),
    ("moon", "moon"), ("motorcycle", "stereo_motorcycle"), ("rocket", "rocket"),
]
PHOTO_NAMES = [name for name, _ in PHOTOS]
DEFAULT_TILE = 32
#: Longer side of a photo before tiling (larger photos are downscaled to it).
MAX_SIDE = 512
SCALES = (1, 2, 4)  # the photo is resized by 1/s for each s
#: Every ``TEST_EVERY``-th tile (position % 10 == 9) forms the 'test' split.
TEST_EVERY = 10

_photos: List[np.ndarray] = []
_tiles: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}


def _resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [3, h, w], bilinear antialiased (as :func:`kdlab.data.sets._resize`)."""
    if tuple(img.shape[-2:]) == (h, w):
        return img
    import torch.nn.functional as F

    r = F.interpolate(img[None].float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return r[0].round_().clamp_(0, 255).to(torch.uint8)


def _load_photos() -> List[torch.Tensor]:
    """The photos as uint8 [3, H, W] (longer side <= MAX_SIDE), decoded once per process."""
    if not _photos:
        try:
            import skimage.data as skd
        except ImportError as e:
            raise DataNotFoundError(
                "data set 'skimage-patches' is cut from the photographs shipped by scikit-image, which "
                f"is not installed ({e}): pip install scikit-image"
            ) from e
        for name, fn in PHOTOS:
            img = getattr(skd, fn)()
            if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity); the left view
                img = img[0]
            img = np.asarray(img, dtype=np.uint8)
            if img.ndim == 2:  # grey photo: replicate to RGB
                img = np.repeat(img[:, :, None], 3, axis=2)
            t = torch.from_numpy(np.ascontiguousarray(img[:, :, :3].transpose(2, 0, 1)))
            h, w = t.shape[-2:]
            if max(h, w) > MAX_SIDE:
                k = MAX_SIDE / max(h, w)
                t = _resize(t, round(h * k), round(w * k))
            _photos.append(t)
    return list(_photos)


def _cut(size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """All tiles of side ``size`` in enumeration order: ``(uint8 [N, 3, S, S], int64 [N])``."""
    if size not in _tiles:
        stride = max(size // 2, 1)
        tiles, labels = [], []
        for label, photo in enumerate(_load_photos()):
            h, w = photo.shape[-2:]
            for s in SCALES:
                hs, ws = h // s, w // s
                if hs < size or ws < size:
                    continue
                img = _resize(photo, hs, ws)
                # [3, nh, nw, S, S] windows -> [nh * nw, 3, S, S], row-major
                win = img.unfold(1, size, stride).unfold(2, size, stride)
                win = win.permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size)
                tiles.append(win)
                labels.append(torch.full((win.shape[0],), label, dtype=torch.int64))
        if not tiles:
            raise ValueError(f"image_size={size} is larger than every photograph of skimage-patches "
                             f"(longest side {MAX_SIDE}); use a tile side of at most {MAX_SIDE}")
        _tiles[size] = (torch.cat(tiles).contiguous(), torch.cat(labels))
    return _tiles[size]


def load_skimage_patches(
    split: str, root: Optional[os.PathLike] = None, download: Optional[bool] = None,
    image_size: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One split of ``skimage-patches``.

    Args:
        split: ``'train'`` (9 of every 10 tiles) or ``'test'`` (every 10th).
        root, download: unused (the photos ship inside scikit-image); accepted like every loader's.
        image_size: tile side S in pixels (default 32); tiles are cut at this size, not resized.

    Returns:
        ``(images uint8 [N, 3, S, S] in 0..255, labels int64 [N] in 0..12)`` (label = photo index
        in :data:`PHOTOS`); deterministic.

    Raises:
        DataNotFoundError: scikit-image is not installed (the message says ``pip install scikit-image``).
        ValueError: bad ``split``; ``image_size`` < 1 or larger than every photo.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be one of ['test', 'train'], got {split!r}")
    size = DEFAULT_TILE if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    images, labels = _cut(size)
    test = torch.arange(labels.numel()) % TEST_EVERY == TEST_EVERY - 1
    keep = test if split == "test" else ~test
    return images[keep], labels[keep]  # boolean indexing copies: callers may modify them
