"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, the data root, or a download.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 60,000 training and 10,000 test 28x28 grey-scale
images of 10 clothing classes, stored as gzipped IDX files. On machines without internet the
Debian package ``dataset-fashion-mnist`` installs the four files in
:data:`FASHION_MNIST_DEBIAN_DIR`. kdlab sets them up in torchvision's layout under the data root
(``<root>/FashionMNIST/raw/``: a symlink to each ``.gz`` plus the decompressed file, which is what
:class:`torchvision.datasets.FashionMNIST` reads) and loads them with torchvision. The Debian
directory itself is only read, never written.
"""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from kdlab.data.paths import DataNotFoundError, data_root, resolve_download, root_hint

#: Where the Debian package ``dataset-fashion-mnist`` puts the files (read-only). A module
#: constant so tests (and unusual installs) can point it elsewhere.
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
#: The Debian package name, for error messages.
DEBIAN_PACKAGE = "dataset-fashion-mnist"

#: Class names, index = label (Xiao et al. 2017, Table 1).
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_FILES: List[str] = [f for pair in _FILES.values() for f in pair]
_EXPECTED_N = {"train": 60000, "test": 10000}


def raw_folder(root: Optional[os.PathLike] = None) -> Path:
    """``<data root>/FashionMNIST/raw``: torchvision's folder for the IDX files."""
    return data_root(root) / "FashionMNIST" / "raw"


def _is_inside(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return True
    except (ValueError, OSError):
        return False


def _gunzip_atomic(src: Path, dst: Path) -> None:
    """Decompress ``src`` to ``dst`` via a temp file + rename, so concurrent processes (DDP ranks)
    never read a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, length=1 << 20)
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _link_or_copy(src: Path, dst: Path) -> None:
    """Symlink ``dst -> src`` (copy where symlinks are not allowed), replacing a dangling link."""
    if dst.is_symlink() and not dst.exists():
        dst.unlink()
    if dst.exists():
        return
    try:
        tmp = dst.with_name(f"{dst.name}.{os.getpid()}.lnk")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        fd, tmp_copy = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
        os.close(fd)
        shutil.copyfile(src, tmp_copy)
        os.replace(tmp_copy, dst)


def _source_gz(name: str, raw: Path) -> Optional[Path]:
    """The .gz for ``name``: in the data root first (a user's copy wins), then the Debian dir."""
    for cand in (raw / f"{name}.gz", Path(FASHION_MNIST_DEBIAN_DIR) / f"{name}.gz"):
        if cand.is_file():
            return cand
    return None


def find_fashion_mnist(root: Optional[os.PathLike] = None) -> dict:
    """Where each of the four files is: ``{file: Path | None}`` (raw file or a .gz source)."""
    raw = raw_folder(root)
    found = {}
    for name in _ALL_FILES:
        if (raw / name).is_file():
            found[name] = raw / name
        else:
            found[name] = _source_gz(name, raw)
    return found


def setup_fashion_mnist(root: Optional[os.PathLike] = None) -> bool:
    """Put Fashion-MNIST in torchvision's layout under the data root, from local files only.

    For each of the four IDX files: if ``<root>/FashionMNIST/raw/<file>`` exists, keep it; else take
    ``<file>.gz`` from the raw folder or from :data:`FASHION_MNIST_DEBIAN_DIR` (symlinked into the
    raw folder) and decompress it next to the link.

    Returns:
        True if all four files are in place afterwards, False if some are nowhere on disk.

    Raises:
        ValueError: if the data root lies inside the (read-only) Debian directory.
        OSError: if the data root cannot be written (the caller falls back to reading the .gz).
    """
    root_path = data_root(root)
    if _is_inside(root_path, Path(FASHION_MNIST_DEBIAN_DIR)):
        raise ValueError(
            f"data root {root_path} is inside {FASHION_MNIST_DEBIAN_DIR}, which belongs to the Debian "
            f"package {DEBIAN_PACKAGE} and is read-only; choose another root (root=... or $KDLAB_DATA)"
        )
    found = find_fashion_mnist(root_path)
    if any(v is None for v in found.values()):
        return False
    raw = raw_folder(root_path)
    for name, src in found.items():
        if src == raw / name:
            continue
        raw.mkdir(parents=True, exist_ok=True)
        gz = raw / f"{name}.gz"
        if src != gz:
            _link_or_copy(src, gz)
        _gunzip_atomic(gz, raw / name)
    return True


def read_idx_gz(path: os.PathLike) -> torch.Tensor:
    """Decode a gzipped IDX file (LeCun's MNIST format) of unsigned bytes into a uint8 tensor.

    Used when the data root cannot be written, so the torchvision layout cannot be set up.

    Raises:
        ValueError: if the file is not an unsigned-byte IDX file.
    """
    with gzip.open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {buf[:4]!r})")
    ndim = buf[3]
    dims = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes")
    return torch.from_numpy(data.reshape(dims).copy())


def _not_found(root: Path, missing: List[str], download_error: Optional[BaseException]) -> DataNotFoundError:
    raw = root / "FashionMNIST" / "raw"
    msg = (
        f"Fashion-MNIST not found (missing: {', '.join(f + '.gz' for f in missing)}). Looked in "
        f"{FASHION_MNIST_DEBIAN_DIR} (Debian package {DEBIAN_PACKAGE}) and in {raw}. "
        f"Install it with `sudo apt-get install {DEBIAN_PACKAGE}`, or put the four *-ubyte.gz files in "
        f"{raw}/, or allow a download (download=True, needs internet). "
    )
    if download_error is not None:
        msg += f"The download failed: {type(download_error).__name__}: {download_error}. "
    else:
        msg += "Download was disabled. "
    return DataNotFoundError(msg + root_hint(root))


def load_fashion_mnist(
    split: str, root: Optional[os.PathLike] = None, download: Optional[bool] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load one Fashion-MNIST split as tensors.

    Args:
        split: ``'train'`` (60,000 images) or ``'test'`` (10,000 images).
        root: data root (see :func:`kdlab.data.data_root`).
        download: True/False, or None = download only if missing and ``$KDLAB_OFFLINE`` is unset.

    Returns:
        ``(images uint8 [N, 1, 28, 28] in 0..255, labels int64 [N] in 0..9)``.

    Raises:
        DataNotFoundError: the files are neither in the Debian directory nor in the data root and
            could not be downloaded; the message names ``sudo apt-get install dataset-fashion-mnist``
            and the data root.
        ValueError: a bad ``split``, or a data root inside the Debian directory.
    """
    if split not in _FILES:
        raise ValueError(f"split must be one of {sorted(_FILES)}, got {split!r}")
    from torchvision.datasets import FashionMNIST

    root_path = data_root(root)
    try:
        ready = setup_fashion_mnist(root_path)
    except OSError as e:  # read-only data root: decode the .gz directly instead
        found = find_fashion_mnist(root_path)
        img_src, lab_src = (found[f] for f in _FILES[split])
        if img_src is None or lab_src is None:
            raise _not_found(root_path, [f for f in _FILES[split] if found[f] is None], None) from e
        warnings.warn(
            f"cannot set Fashion-MNIST up under {root_path} ({e}); reading {img_src.parent} directly",
            RuntimeWarning,
        )
        read = lambda p: read_idx_gz(p) if p.suffix == ".gz" else read_idx_gz_plain(p)  # noqa: E731
        images, labels = read(img_src), read(lab_src)
        return _finish(images, labels, split)

    download_error: Optional[BaseException] = None
    if not ready:
        if resolve_download(download):
            try:
                FashionMNIST(str(root_path), train=True, download=True)
                ready = True
            except Exception as e:  # no network, mirror down, disk full...
                download_error = e
        if not ready:
            found = find_fashion_mnist(root_path)
            raise _not_found(root_path, [f for f, v in found.items() if v is None], download_error)
    ds = FashionMNIST(str(root_path), train=(split == "train"), download=False)
    return _finish(ds.data, ds.targets, split)


def read_idx_gz_plain(path: os.PathLike) -> torch.Tensor:
    """Decode an uncompressed IDX file of unsigned bytes (see :func:`read_idx_gz`)."""
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    return read_sn3_pascalvincent_tensor(str(path), strict=False)


def _finish(images: torch.Tensor, labels: torch.Tensor, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
    images = images.to(torch.uint8).unsqueeze(1).contiguous()  # [N, 28, 28] -> [N, 1, 28, 28]
    labels = labels.to(torch.int64).contiguous()
    if images.shape[0] != _EXPECTED_N[split] or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"Fashion-MNIST {split} split has {images.shape[0]} images and {labels.shape[0]} labels, "
            f"expected {_EXPECTED_N[split]}: the files are damaged; delete them and set up again"
        )
    return images, labels
