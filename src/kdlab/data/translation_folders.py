"""Image-to-image data in the public folder layouts of pix2pix and CycleGAN.

* ``paired-folder:<path>`` (pix2pix, Isola et al. 2017; ``datasets/combine_A_and_B.py``): ``<path>/train/``
  holds images that are an input A and its target B side by side (``A|B``, each half W/2 x H), as
  edges2shoes, edges2handbags, cityscapes, facades and maps are distributed. The test split is
  ``<path>/test/`` when it exists, else ``<path>/val/`` (edges2shoes ships train/ and val/ only).
* ``unpaired-folder:<path>`` (CycleGAN, Zhu et al. 2017): ``trainA/``, ``trainB/``, ``testA/``,
  ``testB/`` of the two domains, as horse2zebra, summer2winter_yosemite, apple2orange, monet2photo.

Images (``.jpg``, ``.png`` ... directly in those folders) are decoded with :mod:`kdlab.data.imagefolder`'s
helpers: RGB, shorter side resized to the image size (default 256, the papers' size) and centre-cropped.
Decoded folders are cached in memory per (folder, size, file list with modification times).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from kdlab.data import imagefolder
from kdlab.data.paths import DataNotFoundError

PAIRED_PREFIX = "paired-folder:"
UNPAIRED_PREFIX = "unpaired-folder:"
#: Side of folder images when ``data.image_size`` is not given (pix2pix / CycleGAN train at 256).
DEFAULT_FOLDER_SIZE = 256
UNPAIRED_DIRS = ("trainA", "trainB", "testA", "testB")

_cache: Dict[tuple, torch.Tensor] = {}


def folder_path(name: str, root: Optional[os.PathLike] = None) -> Path:
    """The folder of ``paired-folder:<path>`` / ``unpaired-folder:<path>`` (as given, else under the data root).

    Raises:
        ValueError: no path after the prefix. DataNotFoundError: the folder does not exist.
    """
    text = name.split(":", 1)[1] if ":" in name else name
    layout = ("train/ and test/ folders of A|B side-by-side images" if name.startswith("paired")
              else "trainA/, trainB/, testA/ and testB/ folders of images")
    return imagefolder.parse_path(imagefolder.PREFIX + text, root, layout)


def _image_files(folder: Path) -> List[str]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return sorted(str(folder / f) for f in os.listdir(folder)
                  if f.lower().endswith(IMG_EXTENSIONS) and (folder / f).is_file())


def _decode(files: List[str], size: int, half: Optional[str] = None) -> torch.Tensor:
    """uint8 [N, 3, S, S] of ``files`` (``half``: 'A' = left half, 'B' = right half of each image)."""
    key = (half, size, imagefolder.signature([(f, 0) for f in files]))
    if key not in _cache:
        seen: dict = {}  # (W, H) -> the first file of that size

        def box(path: str, wh: Tuple[int, int]) -> Tuple[int, int, int, int]:
            w, h = wh
            seen.setdefault(wh, path)
            if w % 2:
                raise ValueError(f"paired image {path} is {w}x{h} (W x H): its input half A would be {w // 2}x{h} "
                                 f"and its target half B {w - w // 2}x{h}; a pix2pix pair is A|B side by side, "
                                 "two halves of the same size (even width)")
            return (0, 0, w // 2, h) if half == "A" else (w // 2, 0, w, h)
        _cache[key] = imagefolder.decode_files(files, size, box if half is not None else None)
        if half == "A" and len(seen) > 1:  # pix2pix sets hold one size; a mix is often a stray image
            (wh1, f1), (wh2, f2) = list(seen.items())[:2]
            warnings.warn(f"paired folder {os.path.dirname(f1)} holds A|B images of {len(seen)} sizes ({f1} is "
                          f"{wh1[0]}x{wh1[1]}, {f2} is {wh2[0]}x{wh2[1]}, W x H): each half is resized (shorter side to "
                          f"{size}) and centre-cropped to {size}x{size}, so halves that are not square lose their "
                          "edges; give every pair one size to silence this", UserWarning, stacklevel=3)
    return _cache[key]


def paired_split_dir(folder: Path, split: str) -> Path:
    """``train/`` for 'train'; ``test/`` (else ``val/``) for 'test'.

    Raises:
        DataNotFoundError: the folder lacks it (names the layout).
    """
    names = ("train",) if split == "train" else ("test", "val")
    for n in names:
        if (folder / n).is_dir():
            return folder / n
    raise DataNotFoundError(
        f"paired folder {folder} has no {' or '.join(n + '/' for n in names)} folder; the pix2pix layout is "
        f"{folder}/train/*.jpg|png and {folder}/test/ (or val/), each image the input A and its target B side by side")


def load_paired_folder(name: str, split: str, root: Optional[os.PathLike] = None, image_size: Optional[int] = None
                       ) -> Tuple[torch.Tensor, torch.Tensor, List[Tuple[str, str]]]:
    """One split of a pix2pix folder: ``(A uint8 [N, 3, S, S], B uint8 [N, 3, S, S], files)``.

    Raises:
        DataNotFoundError: missing folder / split folder, or no images in it.
        ValueError: an image of odd width (its two halves differ: names the file and both sizes).
    """
    size = DEFAULT_FOLDER_SIZE if image_size is None else image_size
    folder = folder_path(name, root)
    d = paired_split_dir(folder, split)
    files = _image_files(d)
    if not files:
        raise DataNotFoundError(f"no images in {d} (the {split} split of paired folder {folder})")
    return _decode(files, size, "A"), _decode(files, size, "B"), [(f, f) for f in files]


def load_unpaired_folder(name: str, split: str, root: Optional[os.PathLike] = None, image_size: Optional[int] = None
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """One split of a CycleGAN folder: ``(domain A uint8 [N_A, 3, S, S], domain B uint8 [N_B, 3, S, S])``.

    Raises:
        DataNotFoundError: the folder lacks one of trainA/, trainB/, testA/, testB/ (names the missing
            ones and the layout), or one of them has no images.
    """
    size = DEFAULT_FOLDER_SIZE if image_size is None else image_size
    folder = folder_path(name, root)
    check_unpaired_folder(folder)
    out = []
    for side in ("A", "B"):
        d = folder / f"{split}{side}"
        files = _image_files(d)
        if not files:
            raise DataNotFoundError(f"no images in {d} (domain {side}, {split} split of unpaired folder {folder})")
        out.append(_decode(files, size))
    return out[0], out[1]


def check_unpaired_folder(folder: Path) -> None:
    """Raise DataNotFoundError naming the CycleGAN folders that ``folder`` lacks."""
    missing = [d for d in UNPAIRED_DIRS if not (folder / d).is_dir()]
    if missing:
        raise DataNotFoundError(f"unpaired folder {folder} lacks {', '.join(m + '/' for m in missing)}; the CycleGAN "
                                f"layout is {', '.join(d + '/' for d in UNPAIRED_DIRS)} with the images of domains A and B")


__all__ = ["PAIRED_PREFIX", "UNPAIRED_PREFIX", "DEFAULT_FOLDER_SIZE", "load_paired_folder", "load_unpaired_folder",
           "folder_path", "check_unpaired_folder", "paired_split_dir"]
