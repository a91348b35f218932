"""The transfer source: the data a student is distilled on, which need not be the teacher's.

Four kinds, chosen by the config key ``data.transfer`` (:func:`build_transfer`):

* ``'train'`` (default, also ``None``): the labelled training subset of the run's data set;
* ``'none'``: data-free distillation; a :class:`NoData` source serves batches that carry only row
  indices (``data.steps_per_epoch`` batches of ``batch_size`` per epoch) and the method synthesises
  the inputs;
* ``'synth'``: a generator trained in the run makes the student's images (the methods' synthesizer,
  :mod:`kdlab.games.synthesizer`); the source serves the real images of ``data.synth_real`` (the
  discriminator's real data, mixed into the student's batches) or, without it, row indices as ``'none'``;
* any registered data set (``mnist-digits``, ``skimage-patches``, ``cifar10`` ...) or
  ``imagefolder:<path>``: out-of-domain images without the task's labels (``y = None``), made to the
  teacher's input shape (``data.transfer_channels``, ``data.transfer_size``), optionally a seeded
  random subset of ``data.transfer_n`` images, and normalised with the teacher domain's mean/std.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from kdlab.data import imagefolder
from kdlab.data.batch import Batch
from kdlab.data.memory import InMemoryDataset
from kdlab.data.sets import DATASETS, DataSpec, _canonical, hflip_ok, load_split

#: ``data.transfer`` value of the labelled training subset (the default).
TRANSFER_LABELLED = "train"
#: ``data.transfer`` value of data-free distillation.
TRANSFER_NONE = "none"
#: ``data.transfer`` value of synthetic transfer images (a generator trained in the run makes them;
#: ``data.synth_real`` optionally names real images served beside them)
TRANSFER_SYNTH = "synth"


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class TransferInfo:
    """What a method's terms may know of the transfer source before training.

    Attributes:
        size: rows per epoch (examples of a data set; ``steps_per_epoch * batch_size`` of a data-free source).
        indexed: every batch carries ``index`` int64 [B] in [0, size): the row of each example (a CRD
            memory bank is indexed by it).
    """

    size: int
    indexed: bool


def transfer_info(dataset: Dataset) -> TransferInfo:
    """The :class:`TransferInfo` of a transfer source (in-memory sets and :class:`NoData` are indexed)."""
    return TransferInfo(size=len(dataset), indexed=isinstance(dataset, (InMemoryDataset, NoData)))


class NoData(Dataset):
    """A data-free transfer source of ``n`` rows: batches carry only their row indices.

    Served batch-wise by :func:`kdlab.data.make_loader` (``yields_batches``): each batch is a
    :class:`Batch` with ``x = None``, ``y = None`` and ``index`` int64 [B], so its ``size`` is the
    batch size and a data-free method synthesises B inputs.

    Args:
        n: rows per epoch (``data.steps_per_epoch * batch_size`` in :func:`build_transfer`), >= 1.

    Raises:
        ValueError: ``n`` not an int >= 1; IndexError: an index outside [0, n).
    """

    yields_batches = True
    labelled = False

    def __init__(self, n: int) -> None:
        self.n = _positive_int(n, "NoData n")

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """``Batch(index=int64 [B])`` with no inputs and no labels."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.n):
            raise IndexError(f"indices in [{index.min()}, {index.max()}] out of range for NoData of {self.n} rows")
        return Batch(index=torch.from_numpy(index))

    def __getitem__(self, i: int) -> torch.Tensor:
        """One row: its index as an int64 scalar tensor (a data-free row has nothing else)."""
        i = int(i)
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for NoData of {self.n} rows")
        return torch.tensor(i % self.n, dtype=torch.int64)

    def __repr__(self) -> str:
        return f"NoData(n={self.n})"


class EpochPasses(Dataset):
    """A transfer source served ``passes`` times per epoch: ``passes * ceil(n / batch_size) * batch_size`` rows,
    row ``i`` being the source's row ``i % n``, so a shuffled epoch holds exactly ``passes * ceil(n / batch_size)``
    batches (each source image ``passes`` times, a few more where the tail is filled).

    MosaicKD's epoch (zju-vipa/MosaicKD ``kd_mosaic.py``, ``train``): each of the ``ceil(n / B)`` batches of the OOD
    loader is followed by 5 student steps, each on a fresh batch of a second, endless OOD iterator; with
    ``passes`` = 5 (``players.synth_every``) kdlab's loop runs the same number of student steps per epoch.

    Args:
        dataset: the source (an :class:`InMemoryDataset`, a ``Subset`` of one, or any map-style dataset).
        passes: >= 1. batch_size: the loader's batch size, >= 1.

    Raises:
        ValueError: ``passes`` or ``batch_size`` < 1, or an empty source.
    """

    def __init__(self, dataset: Dataset, passes: int, batch_size: int) -> None:
        self.dataset = dataset
        self.n = len(dataset)
        self.passes = _positive_int(passes, "passes")
        self.batch_size = _positive_int(batch_size, "batch_size")
        if self.n < 1:
            raise ValueError("an empty transfer source has no passes")
        self.rows = self.passes * (-(-self.n // self.batch_size)) * self.batch_size
        from kdlab.data.loaders import _batched

        self.yields_batches = _batched(dataset)

    def __len__(self) -> int:
        return self.rows

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        return self.dataset.__getitems__([int(i) % self.n for i in indices])

    def __getitem__(self, i: int) -> Any:
        if not 0 <= int(i) < self.rows:
            raise IndexError(f"index {i} out of range for {self.rows} rows")
        return self.dataset[int(i) % self.n]

    def __repr__(self) -> str:
        return f"EpochPasses({self.dataset!r}, passes={self.passes}, rows={self.rows})"


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of uint8 RGB: ``L = round(0.299 R + 0.587 G + 0.114 B)``.

    Args:
        images: uint8 [N, 3, H, W].

    Returns:
        uint8 [N, 1, H, W]; exact integer arithmetic (ties round up), in chunks to bound memory.
    """
    out = torch.empty(images.shape[0], 1, *images.shape[2:], dtype=torch.uint8)
    for s in range(0, images.shape[0], 4096):
        c = images[s:s + 4096].to(torch.int32)
        luma = c[:, 0:1] * 299 + c[:, 1:2] * 587 + c[:, 2:3] * 114
        out[s:s + 4096] = ((luma + 500) // 1000).to(torch.uint8)
    return out


def _accepted() -> str:
    sets = [n for n in DATASETS.names() if n != "imagefolder"]
    return (f"accepted: '{TRANSFER_LABELLED}' (the labelled training subset), '{TRANSFER_NONE}' (data-free), "
            f"a data set ({', '.join(sets)}) or 'imagefolder:<path>'")


def _source_name(name) -> str:
    """The canonical data set name of an out-of-domain source, or ValueError listing the accepted ones."""
    if isinstance(name, str):
        if name.lower().startswith(imagefolder.PREFIX):
            return name
        key = _canonical(name)
        if key in DATASETS and key != "imagefolder":
            return key
    raise ValueError(f"data.transfer = {name!r} is not a transfer source; {_accepted()}")


def build_transfer(
    name: Optional[str],
    spec: DataSpec,
    train: Dataset,
    *,
    root: Optional[os.PathLike] = None,
    download: Optional[bool] = None,
    n: Optional[int] = None,
    seed: int = 0,
    channels: Optional[int] = None,
    size: Optional[int] = None,
    steps_per_epoch: Optional[int] = None,
    batch_size: int = 128,
    augment: bool = False,
    synth_real: Optional[str] = None,
) -> Dataset:
    """The dataset the student is trained on (config ``data.transfer`` and its options).

    Args:
        name: ``data.transfer``: None or ``'train'``, ``'none'``, ``'synth'``, a registered data set name or
            ``'imagefolder:<path>'`` (see the module docstring).
        spec: the evaluation data set's :class:`DataSpec` (the teacher's domain): its (C, H, W) is
            the shape transfer images must have, its mean/std normalise them.
        train: the run's labelled training subset, returned for ``'train'``.
        root, download: where and whether to fetch a named source (see :func:`kdlab.data.load_split`).
        n: ``data.transfer_n``: keep a random subset of this many source images (drawn with ``seed``).
        seed: seed of that subset.
        channels: ``data.transfer_channels``: 1 = grey by ITU-R 601-2 luma (:func:`to_grayscale`),
            3 = grey replicated to RGB; None = as the source is.
        size: ``data.transfer_size``: image side S (bilinear antialiased resize; the tile side for
            ``skimage-patches``; the decode size for image folders); None = the source's own.
        steps_per_epoch: ``data.steps_per_epoch``: batches per epoch of a data-free run.
        batch_size: the training batch size (rows per data-free batch).
        augment: random crop/flip the out-of-domain images (flips only where the source allows,
            :func:`kdlab.data.hflip_ok`).
        synth_real: ``data.synth_real``, with ``'synth'``: the real images served beside the synthetic ones
            (built as the out-of-domain source of that name); None: row indices only (``steps_per_epoch``).

    Returns:
        ``train`` itself; a :class:`NoData` of ``steps_per_epoch * batch_size`` rows; or an
        :class:`InMemoryDataset` (``labelled=False``: batches carry ``x`` float32 [B, C, H, W]
        normalised as ``(x / 255 - spec.mean) / spec.std``, ``y = None``, ``index``).

    Raises:
        ValueError (before any training; each message names the bad value and the accepted ones):
            an unknown ``name``; ``'none'`` without ``steps_per_epoch`` >= 1; ``channels`` not 1/3,
            ``size`` < 1, ``n`` < 1 or larger than the source; these options given with ``'train'``
            or ``'none'``; transfer images whose (C, H, W) differs from the spec's (the message
            names both shapes and the ``data.transfer_channels`` / ``data.transfer_size`` setting
            that fixes it).
        DataNotFoundError: the source's files are missing (see :func:`kdlab.data.load_split`).
    """
    label = name.strip().lower() if isinstance(name, str) else name
    if label == TRANSFER_SYNTH:  # the batches carry the real images of synth_real, or only row indices
        return build_transfer(synth_real or TRANSFER_NONE, spec, train, root=root, download=download, n=n, seed=seed,
                              channels=channels, size=size, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                              augment=augment)
    if synth_real is not None:
        raise ValueError(f"data.synth_real = {synth_real!r} needs data.transfer = 'synth', got {name!r}")
    if label is None or label in (TRANSFER_LABELLED, TRANSFER_NONE):
        given = [f"data.transfer_{k}={v!r}" for k, v in (("n", n), ("channels", channels), ("size", size))
                 if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to an out-of-domain transfer set, not to "
                             f"data.transfer = {name!r}; unset them, or name a data set ({_accepted()})")
        if label == TRANSFER_NONE:
            if steps_per_epoch is None or isinstance(steps_per_epoch, bool) or not isinstance(
                    steps_per_epoch, (int, np.integer)) or steps_per_epoch < 1:
                raise ValueError(f"data.transfer = 'none' (data-free) needs data.steps_per_epoch, an int >= 1 "
                                 f"of batches per epoch; got {steps_per_epoch!r}")
            return NoData(int(steps_per_epoch) * _positive_int(batch_size, "batch_size"))
        return train

    source = _source_name(name)
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"data.transfer_channels = {channels!r}; accepted: 1 (grey, luma), 3 (RGB) or None")
    if size is not None:
        size = _positive_int(size, "data.transfer_size")
    if n is not None:
        n = _positive_int(n, "data.transfer_n")

    images, labels = load_split(source, "train", root=root, download=download, image_size=size)
    if n is not None:
        if n > len(labels):
            raise ValueError(f"data.transfer_n = {n} is larger than {source!r}'s {len(labels)} training "
                             f"images; accepted: 1..{len(labels)} or None (all)")
        g = torch.Generator().manual_seed(int(seed))
        keep = torch.randperm(len(labels), generator=g)[:n].sort().values
        images, labels = images[keep], labels[keep]
    if channels == 1 and images.shape[1] == 3:
        images = to_grayscale(images)
    elif channels == 3 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1).contiguous()

    got = tuple(images.shape[1:])
    want = (spec.in_channels, spec.image_size, spec.image_size)
    if got != want:
        fixes = []
        if got[0] != want[0]:
            fixes.append(f"data.transfer_channels={want[0]}")
        if got[1:] != want[1:]:
            fixes.append(f"data.transfer_size={want[1]}")
        raise ValueError(f"data.transfer = {name!r} gives images of shape (C, H, W) = {got} but the teacher's "
                         f"data set {spec.name!r} has {want}; set {' and '.join(fixes)}")
    return InMemoryDataset(images, labels, spec.mean, spec.std, augment=augment,
                           hflip=hflip_ok(source), labelled=False)


__all__ = ["EpochPasses", "NoData", "build_transfer", "to_grayscale", "TRANSFER_LABELLED", "TRANSFER_NONE", "TRANSFER_SYNTH"]
