"""Your own images: ``imagefolder:<path>`` with one subfolder per class.

Layouts accepted:

* ``<path>/train/<class>/*.png`` and ``<path>/test/<class>/*.png`` (``val/`` is accepted in place of
  ``test/``): the two splits as given. Test classes must be a subset of the training classes; labels
  follow the training folder's (sorted) class order.
* ``<path>/<class>/*.png``: a single folder; kdlab holds out a stratified 20% as the test split
  (fixed seed 0, :func:`kdlab.data.splits.train_val_split`), the rest is the training split.

Every image is converted to RGB, its shorter side resized to ``image_size`` (bilinear, antialiased)
and centre-cropped to ``image_size`` x ``image_size``, so aspect ratios are kept. Decoded folders are
cached in memory per (folder, image size, file list with modification times).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from kdlab.data.paths import DataNotFoundError, data_root, root_hint
from kdlab.data.splits import train_val_split

PREFIX = "imagefolder:"
DEFAULT_IMAGE_SIZE = 32
#: Fraction held out as the test split for a single-folder layout.
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0

_cache: Dict[tuple, Tuple[torch.Tensor, torch.Tensor, List[str]]] = {}


#: what an image folder holds (named when it is not found)
LAYOUT = "one subfolder per class, or train/ and test/ folders of class subfolders"


def parse_path(name: str, root: Optional[os.PathLike] = None, layout: str = LAYOUT) -> Path:
    """The folder named by ``imagefolder:<path>``: as given (``~`` expanded, relative to the working
    directory), else relative to the data root. ``layout``: what the folder must hold (for the messages).

    Raises:
        ValueError: no path after the prefix.
        DataNotFoundError: the folder does not exist in either place, or the path is a file.
    """
    text = name[len(PREFIX):] if name.lower().startswith(PREFIX) else name
    if not text.strip():
        raise ValueError(f"data set {name!r}: give a folder, as in 'imagefolder:/path/to/images'")
    p = Path(text).expanduser()
    if p.is_dir():
        return p.absolute()
    if not p.is_absolute():
        alt = data_root(root) / p
        if alt.is_dir():
            return alt
    rp = data_root(root)
    if p.is_file():
        raise DataNotFoundError(f"image folder {text!r} is a file; accepted: a folder that holds {layout}")
    raise DataNotFoundError(
        f"image folder {text!r} not found (looked at {p.absolute()}"
        + ("" if p.is_absolute() else f" and {rp / p}")
        + f"). It must hold {layout}. "
        + root_hint(rp)
    )


def _class_dirs(folder: Path) -> List[str]:
    return sorted(d.name for d in os.scandir(folder) if d.is_dir() and not d.name.startswith("."))


def _layout(folder: Path) -> Tuple[Optional[Path], Optional[Path]]:
    """(train_dir, test_dir) for the two-folder layout, else (None, None)."""
    train = folder / "train"
    for test_name in ("test", "val"):
        test = folder / test_name
        if train.is_dir() and test.is_dir():
            return train, test
    return None, None


def _samples(folder: Path, class_to_idx: Dict[str, int]) -> List[Tuple[str, int]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    return make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)


def fit_image(im, image_size: int) -> np.ndarray:
    """A PIL image as uint8 [3, S, S]: converted to RGB, its shorter side resized to ``image_size``
    (bilinear, antialiased) and centre-cropped to a square (the decoding every folder loader shares)."""
    from torchvision.transforms import functional as TF
    from torchvision.transforms import InterpolationMode

    im = im.convert("RGB")
    im = TF.resize(im, image_size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    im = TF.center_crop(im, [image_size, image_size])
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def decode_files(paths: List[str], image_size: int, box: Optional[Callable] = None) -> torch.Tensor:
    """Decode image files into uint8 [N, 3, S, S] with :func:`fit_image`.

    Args:
        paths: N image files.
        image_size: S.
        box: optional ``box(path, (width, height)) -> (left, upper, right, lower)``: the part of each
            image to keep before resizing (e.g. one half of a pix2pix A|B pair); it may raise.
    """
    from PIL import Image

    images = np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            if box is not None:
                im = im.crop(box(path, im.size))
            images[i] = fit_image(im, image_size)
    return torch.from_numpy(images)


def _decode(samples: List[Tuple[str, int]], image_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    labels = torch.tensor([c for _, c in samples], dtype=torch.int64)
    return decode_files([p for p, _ in samples], image_size), labels


def signature(samples: List[Tuple[str, int]]) -> tuple:
    """(path, label, mtime, size) of every sample: a decode cache key that changes when a file does."""
    sig = []
    for path, c in samples:
        st = os.stat(path)
        sig.append((path, c, st.st_mtime_ns, st.st_size))
    return tuple(sig)


def load_image_folder(
    name: str, split: str, root: Optional[os.PathLike] = None, image_size: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Load one split of an image folder.

    Args:
        name: ``'imagefolder:<path>'`` (or the bare path).
        split: ``'train'`` or ``'test'``.
        root: data root, for relative paths that are not found from the working directory.
        image_size: output side length in pixels (default 32).

    Returns:
        ``(images uint8 [N, 3, S, S], labels int64 [N], class_names)``.

    Raises:
        DataNotFoundError: the folder does not exist, has no class subfolders, or a split has no images.
        ValueError: bad ``split`` or ``image_size``, or test classes missing from the training folder.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be one of ['test', 'train'], got {split!r}")
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    folder = parse_path(name, root)
    train_dir, test_dir = _layout(folder)
    class_root = train_dir if train_dir is not None else folder
    classes = _class_dirs(class_root)
    if not classes:
        raise DataNotFoundError(f"image folder {class_root} has no class subfolders")
    class_to_idx = {c: i for i, c in enumerate(classes)}

    if train_dir is not None:
        src = train_dir if split == "train" else test_dir
        if split == "test":
            unknown = sorted(set(_class_dirs(test_dir)) - set(classes))
            if unknown:
                raise ValueError(f"{test_dir} has classes {unknown} that {train_dir} lacks; known: {classes}")
        samples = _samples(src, class_to_idx)
    else:
        src = folder
        samples = _samples(folder, class_to_idx)
    if not samples:
        raise DataNotFoundError(f"no images ({split} split) found under {src}")

    key = (str(src), size, signature(samples))
    if key not in _cache:
        _cache[key] = _decode(samples, size) + (classes,)
    images, labels, _ = _cache[key]

    if train_dir is None:  # single folder: hold out a stratified test part
        train_idx, test_idx = train_val_split(labels, HOLDOUT_FRACTION if len(labels) > 1 else 0, HOLDOUT_SEED)
        idx = train_idx if split == "train" else test_idx
        images, labels = images[idx], labels[idx]
        if split == "test" and len(idx) == 0:
            raise DataNotFoundError(f"image folder {folder} is too small to hold out a test split")
    return images.clone(), labels.clone(), list(classes)
