"""MNIST, CIFAR-10, CIFAR-100 and SVHN through torchvision (download when possible).

These sets cannot be installed offline here; where their files exist in torchvision's layout
under the data root (or can be downloaded) they load unchanged, otherwise a
:class:`~kdlab.data.paths.DataNotFoundError` says where kdlab looked.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np
import torch

from kdlab.data.paths import DataNotFoundError, data_root, resolve_download, root_hint

# Where torchvision looks under the data root, for error messages.
_LAYOUT = {
    "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    "cifar10": "cifar-10-batches-py/",
    "cifar100": "cifar-100-python/",
    "svhn": "{train,test}_32x32.mat",
}


def _make(name: str, root: str, split: str, download: bool):
    import torchvision.datasets as tvd

    train = split == "train"
    if name == "mnist":
        return tvd.MNIST(root, train=train, download=download)
    if name == "cifar10":
        return tvd.CIFAR10(root, train=train, download=download)
    if name == "cifar100":
        return tvd.CIFAR100(root, train=train, download=download)
    if name == "svhn":
        try:
            import scipy.io  # noqa: F401  (torchvision's SVHN reads .mat files with scipy)
        except ImportError as e:
            raise ImportError("SVHN needs scipy to read its .mat files: pip install scipy") from e
        return tvd.SVHN(root, split=split, download=download)
    raise ValueError(f"no torchvision loader for {name!r}; known: {sorted(_LAYOUT)}")


def load_torchvision_set(
    name: str, split: str, root: Optional[os.PathLike] = None, download: Optional[bool] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load ``name`` in {'mnist', 'cifar10', 'cifar100', 'svhn'} as tensors.

    Args:
        name: the data set.
        split: ``'train'`` or ``'test'``.
        root: data root (torchvision's layout under it).
        download: True/False, or None = download only if missing and ``$KDLAB_OFFLINE`` is unset.

    Returns:
        ``(images uint8 [N, C, H, W], labels int64 [N])``; MNIST is 1x28x28, the others 3x32x32.
        SVHN's digit '0' has label 0 (torchvision maps the file's 10 to 0).

    Raises:
        DataNotFoundError: the files are not there and could not be downloaded (names the root).
        ValueError: a bad ``split`` or ``name``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be one of ['test', 'train'], got {split!r}")
    if name not in _LAYOUT:
        raise ValueError(f"no torchvision loader for {name!r}; known: {sorted(_LAYOUT)}")
    root_path = data_root(root)
    want_download = resolve_download(download)
    ds = None
    error: Optional[BaseException] = None
    try:
        ds = _make(name, str(root_path), split, download=False)
    except (RuntimeError, FileNotFoundError, OSError) as e:  # torchvision: "Dataset not found ..."
        error = e
    if ds is None and want_download:
        try:
            root_path.mkdir(parents=True, exist_ok=True)
            ds = _make(name, str(root_path), split, download=True)
            error = None
        except ImportError:
            raise
        except Exception as e:  # no network, mirror down, disk full...
            error = e
    if ds is None:
        how = "the download failed" if want_download else "download was disabled"
        raise DataNotFoundError(
            f"{name} ({split}) not found under {root_path} (torchvision layout: {root_path}/{_LAYOUT[name]}); "
            f"{how}: {type(error).__name__}: {error}. Place the files there or run where internet is "
            f"available with download=True. " + root_hint(root_path)
        ) from error

    data = ds.data
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if name in ("cifar10", "cifar100"):
        data = data.permute(0, 3, 1, 2)  # NHWC -> NCHW
    elif name == "mnist":
        data = data.unsqueeze(1)
    # svhn is already NCHW
    labels = ds.labels if name == "svhn" else ds.targets
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    return data.to(torch.uint8).contiguous(), labels.contiguous()
