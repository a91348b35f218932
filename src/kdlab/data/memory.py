"""A whole data set held as one uint8 tensor, normalised (and optionally augmented) on the fly.

Small image sets (Fashion-MNIST is 47 MB as uint8) fit in memory; indexing a tensor is far faster
than decoding files or running per-sample transforms. :meth:`InMemoryDataset.__getitems__` serves a
whole DataLoader batch with one index operation (used with :func:`collate_batched`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch.utils.data import Dataset

from kdlab.data.batch import Batch


def collate_batched(batch: Any) -> Any:
    """Identity collate for datasets whose ``__getitems__`` already returns a :class:`Batch`.

    Pass it as ``DataLoader(..., collate_fn=collate_batched)`` (``make_loader`` does this for an
    :class:`InMemoryDataset` and ``Subset`` s of one).
    """
    return batch


def default_pad(image_size: int) -> int:
    """Random-crop padding in pixels: 2 for images smaller than 32 (e.g. 28x28), else size // 8
    (4 for 32x32, the CIFAR standard of He et al. 2016)."""
    return 2 if image_size < 32 else image_size // 8


class InMemoryDataset(Dataset):
    """Images held as uint8 [N, C, H, W]; items are normalised float32 tensors.

    ``x = (image / 255 - mean) / std`` per channel.

    Augmentation (``augment=True``; training only), per sample and independently drawn:
    random crop with zero padding (``pad`` pixels each side, default 2 for 28x28 and 4 for 32x32,
    see :func:`default_pad`; the padding is black, i.e. pixel value 0 before normalising) and, when
    ``hflip`` is True, a horizontal flip with probability 1/2. Use ``hflip=False`` for digits
    (mnist, svhn), whose mirror images are not digits; flips are fine for Fashion-MNIST clothing and
    natural images (:func:`kdlab.data.hflip_ok` gives the choice per data set). The random draws come
    from torch's global generator (seeded per DataLoader worker by torch), or from ``generator``.

    Args:
        images_uint8: uint8 [N, C, H, W] (a [N, H, W] tensor is taken as C=1).
        labels: int [N].
        mean, std: length-C (or length-1, broadcast) sequences, in [0, 1] units; std > 0.
        augment: apply the random crop/flip.
        hflip: allow horizontal flips when augmenting.
        pad: crop padding in pixels (None: :func:`default_pad` of H).
        generator: optional ``torch.Generator`` for the augmentation draws.
        labelled: False for a transfer set whose labels are not the task's (out-of-domain data): its
            batches carry ``y = None``.

    Raises:
        ValueError: wrong dtypes/shapes, N mismatch, mean/std of the wrong length or std <= 0, pad < 0.
    """

    def __init__(
        self,
        images_uint8: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = False,
        *,
        hflip: bool = True,
        pad: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        labelled: bool = True,
    ) -> None:
        images = torch.as_tensor(images_uint8).cpu()  # batches are cut on the CPU, moved by the caller
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 in 0..255, got dtype {images.dtype}")
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        labels = torch.as_tensor(labels).cpu()
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an int tensor [N], got {labels.dtype} {tuple(labels.shape)}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        c = images.shape[1]
        mean_t = torch.as_tensor(tuple(mean), dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(tuple(std), dtype=torch.float32).reshape(-1)
        for what, t in (("mean", mean_t), ("std", std_t)):
            if t.numel() not in (1, c):
                raise ValueError(f"{what} has {t.numel()} values; the images have {c} channels (give 1 or {c})")
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be > 0, got {tuple(std_t.tolist())}")
        if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or pad < 0):
            raise ValueError(f"pad must be an int >= 0 or None, got {pad!r}")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64).contiguous()
        # keep the caller's Python floats (not their float32 rounding) for reporting/denormalising
        self.mean = tuple(float(v) for v in mean) * (c if mean_t.numel() == 1 else 1)
        self.std = tuple(float(v) for v in std) * (c if std_t.numel() == 1 else 1)
        self.augment = bool(augment)
        self.hflip = bool(hflip)
        self.pad = default_pad(images.shape[-1]) if pad is None else pad
        self.generator = generator
        self.labelled = bool(labelled)
        # x = img * scale - shift  ==  (img / 255 - mean) / std, one fused pass
        self._scale = (1.0 / (255.0 * std_t.expand(c))).reshape(1, c, 1, 1).numpy()
        self._shift = (mean_t.expand(c) / std_t.expand(c)).reshape(1, c, 1, 1).numpy()
        self._images_np = self.images.numpy()  # shares memory with self.images
        self._labels_np = self.labels.numpy()

    def __getstate__(self) -> dict:  # pickle (spawned workers) the tensors once, not the numpy views too
        state = self.__dict__.copy()
        state.pop("_images_np", None)
        state.pop("_labels_np", None)
        state.pop("_on_device", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._images_np = self.images.numpy()
        self._labels_np = self.labels.numpy()

    # -- properties ------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """1 + the largest label (0 if empty)."""
        return int(self.labels.max()) + 1 if self.labels.numel() else 0

    @property
    def shape(self) -> Tuple[int, int, int]:
        """Per-sample (C, H, W)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.images.shape[0]

    # -- access ----------------------------------------------------------------------------
    # Per-batch work runs in numpy: small tensor ops on a busy 2-core machine pay more for torch's
    # intra-op thread wake-ups than for the arithmetic (measured 1.8 ms vs 0.07 ms per 128x784 batch).
    def _augment(self, imgs: np.ndarray, hflip: Optional[bool] = None) -> np.ndarray:
        """Random crop (and flip where ``hflip``, default :attr:`hflip`) of uint8 [B, C, H, W]: one draw per
        row, shared by all C channels (so stacking two aligned images on C augments them alike)."""
        b, c, h, w = imgs.shape
        p = self.pad
        g = self.generator
        if p > 0:
            padded = np.pad(imgs, ((0, 0), (0, 0), (p, p), (p, p)))  # zeros = black
            oy = torch.randint(0, 2 * p + 1, (b,), generator=g).numpy()
            ox = torch.randint(0, 2 * p + 1, (b,), generator=g).numpy()
            windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # [B, C, 2p+1, 2p+1, H, W], a view
            imgs = windows[np.arange(b), :, oy, ox]  # [B, C, H, W]
        if self.hflip if hflip is None else hflip:
            flip = (torch.rand(b, generator=g) < 0.5).numpy()
            imgs = np.where(flip[:, None, None, None], imgs[..., ::-1], imgs)
        return imgs

    def _batch(self, index: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        imgs = np.take(self._images_np, index, axis=0)
        if self.augment:
            imgs = self._augment(imgs)
        x = imgs.astype(np.float32)
        x *= self._scale
        x -= self._shift
        return torch.from_numpy(x), torch.from_numpy(np.take(self._labels_np, index))

    def _device_copy(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The images (uint8), labels, scale and shift on ``device``, copied there once and kept."""
        cache = self.__dict__.setdefault("_on_device", {})
        if device not in cache:
            cache.clear()  # one device at a time: a run trains on one
            cache[device] = (self.images.to(device), self.labels.to(device),
                             torch.from_numpy(self._scale).to(device), torch.from_numpy(self._shift).to(device))
        return cache[device]

    def _augment_torch(self, imgs: torch.Tensor) -> torch.Tensor:
        """:meth:`_augment` on a uint8 [B, C, H, W] tensor on any device: the same random draws, in the same
        order, from the same generator (drawn on the CPU), so the same crops and flips."""
        b, c, h, w = imgs.shape
        p, g, dev = self.pad, self.generator, imgs.device
        if p > 0:
            oy = torch.randint(0, 2 * p + 1, (b,), generator=g)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=g)
            padded = torch.nn.functional.pad(imgs, (p, p, p, p))  # zeros = black
            rows = (oy[:, None] + torch.arange(h)).to(dev)[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w)).to(dev)[:, None, None, :]
            imgs = padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                          rows, cols]
        if self.hflip:
            flip = (torch.rand(b, generator=g) < 0.5).to(dev)
            imgs = torch.where(flip[:, None, None, None], imgs.flip(-1), imgs)
        return imgs

    def batch_on(self, device: torch.device, index: torch.Tensor) -> Batch:
        """:meth:`__getitems__` of the rows ``index`` (int64 [B]) cut on ``device`` from a copy of the set held
        there (uint8, 1 byte per pixel; copied on first use), normalised there: no host-to-device copy per
        batch. On the CPU this is :meth:`__getitems__` itself. The values equal :meth:`__getitems__`'s bit for
        bit (float32 ``img * scale - shift`` in two correctly rounded steps, as numpy does), and the
        augmentation draws the same random numbers in the same order.

        Raises:
            IndexError: a row outside [0, N).
        """
        device = torch.device(device)
        if device.type == "cpu":
            return self.__getitems__(index.numpy())
        return self._batch_torch(device, index)

    def _batch_torch(self, device: torch.device, index: torch.Tensor) -> Batch:
        """:meth:`batch_on`'s tensor path (any device, the CPU included for tests)."""
        images, labels, scale, shift = self._device_copy(device)
        rows = index.to(device, non_blocking=True)
        imgs = images.index_select(0, rows)
        if self.augment:
            imgs = self._augment_torch(imgs)
        x = imgs.to(torch.float32)
        x.mul_(scale).sub_(shift)
        return Batch(x=x, y=labels.index_select(0, rows) if self.labelled else None, index=rows)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """A whole batch in one index op: :class:`Batch` with ``x`` float32 [B, C, H, W] normalised,
        ``y`` int64 [B] (None when not :attr:`labelled`) and ``index`` int64 [B]."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        x, y = self._batch(index)
        return Batch(x=x, y=y if self.labelled else None, index=torch.from_numpy(index))

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """One sample: ``(x float32 [C, H, W] normalised, y int64 scalar)``."""
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        x, y = self._batch(np.array([i % n], dtype=np.int64))
        return x[0], y[0]

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: [..., C, H, W] normalised -> [0, 1] pixel units."""
        c = len(self.mean)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).reshape(c, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).reshape(c, 1, 1)
        return x * std + mean

    def subset(self, indices: torch.Tensor, augment: Optional[bool] = None) -> "InMemoryDataset":
        """A new InMemoryDataset of the given rows (copies them), same normalisation."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return InMemoryDataset(
            self.images[idx], self.labels[idx], self.mean, self.std,
            self.augment if augment is None else augment,
            hflip=self.hflip, pad=self.pad, generator=self.generator, labelled=self.labelled,
        )

    def __repr__(self) -> str:
        return (f"InMemoryDataset(n={len(self)}, shape={self.shape}, augment={self.augment}, "
                f"hflip={self.hflip}, pad={self.pad})")
