"""Users' own data: a ``torch.utils.data.Dataset`` (or DataLoader) turned into a named kdlab data set.

kdlab's splits are :class:`kdlab.data.InMemoryDataset` s (uint8 images, normalised on the fly), so a user's
data set is read once into uint8 tensors (:func:`materialize`) and registered in :data:`kdlab.data.DATASETS`
like a built-in one: the run then takes the same path (validation split, subsets, loaders) as a named set.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional, Sequence, Tuple

import torch

from kdlab.data.sets import DATASETS, DataSpec, _canonical, _Entry, image_stats
from kdlab.registry import slug

#: prefix of the data sets registered from in-memory objects by the Python API (``memory:<class>-<sha12>``)
MEMORY_PREFIX = "memory:"


def _image(item: Any, where: str) -> torch.Tensor:
    """One image as uint8 [C, H, W]: a tensor/array (float in [0, 1] or uint8; [H, W], [C, H, W] or [H, W, C])
    or a PIL image."""
    if hasattr(item, "getbands"):  # PIL
        import numpy as np

        item = torch.from_numpy(np.array(item))
        item = item.unsqueeze(0) if item.ndim == 2 else item.permute(2, 0, 1)
    try:
        x = torch.as_tensor(item)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{where} is a {type(item).__name__}; accepted items: (image, label) or image, an image being "
                         f"a tensor, a numpy array or a PIL image") from None
    if x.ndim == 2:
        x = x.unsqueeze(0)
    elif x.ndim == 3 and x.shape[0] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(2, 0, 1)
    if x.ndim != 3:
        raise ValueError(f"{where}: an image of shape {tuple(x.shape)}; accepted: [H, W], [C, H, W] or [H, W, C]")
    if x.dtype == torch.uint8:
        return x.contiguous()
    if not x.is_floating_point():
        raise ValueError(f"{where}: an image of dtype {x.dtype}; accepted: uint8 or float in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{where}: float image values in [{lo:.3g}, {hi:.3g}]; accepted: [0, 1] (un-normalised, "
                         f"e.g. transforms.ToTensor() without Normalize: kdlab normalises with the data's mean/std)")
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def materialize(data: Any, what: str = "data") -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Read a Dataset (or a DataLoader's ``.dataset``) whose items are ``(image, label)`` or ``image``.

    Returns:
        (images uint8 [N, C, S, S], labels int64 [N] or None when the items carry no label).

    Raises:
        ValueError: an empty set; items of another form (names the item's type and the accepted ones); images
            of different or non-square shapes; labels that are not non-negative integers.
    """
    data = getattr(data, "dataset", data) if not hasattr(data, "__getitem__") else data
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise ValueError(f"{what}: {type(data).__name__} is no map-style Dataset; accepted: a torch Dataset "
                         f"(len and []), a DataLoader over one, or a data set name")
    n = len(data)
    if n == 0:
        raise ValueError(f"{what}: the data set is empty")
    images, labels, labelled = [], [], None
    for i in range(n):
        item = data[i]
        pair = isinstance(item, (tuple, list))
        if pair and len(item) != 2:
            raise ValueError(f"{what}[{i}] is a {type(item).__name__} of {len(item)} entries; accepted items: "
                             f"(image, label) or image")
        if labelled is None:
            labelled = pair
        elif labelled != pair:
            raise ValueError(f"{what}[{i}]: items mix (image, label) pairs and bare images")
        img = _image(item[0] if pair else item, f"{what}[{i}]")
        if images and img.shape != images[0].shape:
            raise ValueError(f"{what}[{i}]: image shape {tuple(img.shape)} differs from {what}[0]'s "
                             f"{tuple(images[0].shape)}; resize them to one size first")
        images.append(img)
        if pair:
            y = item[1]
            y = int(y.item()) if torch.is_tensor(y) and y.numel() == 1 else y
            if isinstance(y, bool) or not isinstance(y, int) or y < 0:
                raise ValueError(f"{what}[{i}]: label {y!r}; accepted: an integer class index >= 0")
            labels.append(y)
    x = torch.stack(images)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{what}: images are {x.shape[-2]}x{x.shape[-1]}; accepted: square images (resize them)")
    return x, (torch.tensor(labels, dtype=torch.long) if labelled else None)


def register_loader(name: str, load: Callable, *, num_classes: int, in_channels: int, image_size: int,
                    mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                    class_names: Optional[Sequence[str]] = None, hflip: bool = True, replace: bool = False,
                    help: str = "") -> str:
    """Register ``load(split, root, download)`` (tensors or a Dataset, see :func:`materialize`) as data set
    ``name``; returns the registered (canonical) name.

    Raises:
        ValueError: the name is taken and ``replace`` is False; mean/std not of length ``in_channels``.
    """
    mean = tuple(mean) if mean is not None else (0.5,) * in_channels
    std = tuple(std) if std is not None else (0.5,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"data set {name!r}: mean {mean} / std {std} need {in_channels} values (one per channel)")
    key = _canonical(name)

    def read(split: str, root: Any, download: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        out = load(split, root, download)
        if not isinstance(out, tuple):
            out = materialize(out, f"data set {key!r} split {split!r}")
        x, y = out
        if y is None:
            raise ValueError(f"data set {key!r} split {split!r} yields images without labels; accepted: (image, label)")
        return x, y

    spec = DataSpec(key, int(num_classes), int(in_channels), int(image_size), mean, std, list(class_names or []))
    DATASETS.add(key, _Entry(spec, read, hflip, help or f"user data set {key}"), help=help, replace=replace)
    return key


def register_memory(train: Any, test: Any, val: Any = None, hflip: bool = False) -> str:
    """Register in-memory data (Datasets or DataLoaders of (image, label)) as ``memory:<class>-<sha12>``, the
    hash over every split's uint8 images and labels (the same data always gets the same name); mean/std are
    computed from the training images. A ``val`` set becomes the validation split as given (the last rows of
    the registered training split, :func:`kdlab.data.sets.given_validation`). Returns the name (what
    ``data.name`` records).

    Raises:
        ValueError: see :func:`materialize`; unlabelled items; images of another shape than the training ones.
    """
    parts = {"train": materialize(train, "train"), "test": materialize(test, "test") if test is not None else None}
    parts["test"] = parts["test"] or parts["train"]
    if val is not None:
        parts["val"] = materialize(val, "val")
    tx = parts["train"][0]
    for what, (x, y) in parts.items():
        if y is None:
            raise ValueError(f"{what}: the items are bare images; accepted here: (image, label) pairs (unlabelled "
                             f"images are a transfer set: kdlab.distill(..., transfer=<Dataset>))")
        if x.shape[1:] != tx.shape[1:]:
            raise ValueError(f"{what} images are {tuple(x.shape[1:])} (C, H, W), train images {tuple(tx.shape[1:])}")
    h = hashlib.sha256()
    for what in ("train", "test", "val"):
        for t in parts.get(what) or ():
            h.update(t.contiguous().numpy().tobytes())
        h.update(what.encode())
    name = f"{MEMORY_PREFIX}{slug(type(getattr(train, 'dataset', train)).__name__)}-{h.hexdigest()[:12]}"
    if name in DATASETS:
        return name
    mean, std = image_stats(tx)
    names = getattr(getattr(train, "dataset", train), "classes", None)
    k = int(max(int(y.max()) for _, y in parts.values()) + 1)
    splits = {"train": parts["train"], "test": parts["test"]}
    if val is not None:  # the given validation rows follow the training rows
        splits["train"] = tuple(torch.cat([a, b]) for a, b in zip(parts["train"], parts["val"]))
    spec = DataSpec(name, k, int(tx.shape[1]), int(tx.shape[-1]), mean, std,
                    [str(c) for c in names] if isinstance(names, (list, tuple)) and len(names) == k else [])
    n_val = len(parts["val"][1]) if val is not None else None
    DATASETS.add(name, _Entry(spec, lambda split, root, download: splits[split], hflip,
                              f"in-memory {type(train).__name__}: {len(tx)} train"
                              f"{f' + {n_val} val' if n_val else ''} / {len(parts['test'][1])} test images",
                              val_rows=n_val))
    return name


def register_images(data: Any) -> str:
    """Register in-memory images (a Dataset or DataLoader of images, or of (image, label) whose labels are
    ignored) as an unlabelled transfer source ``memory:<class>-<sha12>`` (``data.transfer``: the student learns
    from the teacher's outputs on them). Returns the name.

    Raises:
        ValueError: see :func:`materialize`.
    """
    x, _ = materialize(data, "transfer")
    h = hashlib.sha256(x.contiguous().numpy().tobytes())
    name = f"{MEMORY_PREFIX}{slug(type(getattr(data, 'dataset', data)).__name__)}-{h.hexdigest()[:12]}"
    if name not in DATASETS:
        y = torch.zeros(len(x), dtype=torch.long)  # no labels: the transfer batches carry y = None
        mean, std = image_stats(x)
        spec = DataSpec(name, 1, int(x.shape[1]), int(x.shape[-1]), mean, std, [])
        DATASETS.add(name, _Entry(spec, lambda split, root, download: (x, y), False,
                                  f"in-memory {type(data).__name__}: {len(x)} unlabelled images"))
    return name
