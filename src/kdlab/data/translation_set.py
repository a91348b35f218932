"""The in-memory dataset of an image-to-image translation task: :class:`TranslationDataset`.

Rows are source-domain images; each row also names one output-domain image (``target_index``): its
ground truth for a paired task (pix2pix, Isola et al. 2017), an independently drawn image of the
output domain for an unpaired one (CycleGAN, Zhu et al. 2017). Both domains are served in [-1, 1]
(``img / 127.5 - 1``, i.e. mean = std = 0.5 per channel), the range of a Tanh generator, so no
rescaling sits between the data and the generators.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from kdlab.data.batch import Batch
from kdlab.data.memory import InMemoryDataset

PAIRED = "paired"
UNPAIRED = "unpaired"
PAIRINGS = (PAIRED, UNPAIRED)


def _as_images(t: torch.Tensor, what: str) -> torch.Tensor:
    t = torch.as_tensor(t).cpu()
    if t.dtype != torch.uint8 or t.ndim != 4:
        raise ValueError(f"{what} images must be uint8 [N, C, H, W] in 0..255, got {t.dtype} {tuple(t.shape)}")
    return t.contiguous()


class TranslationDataset(InMemoryDataset):
    """Source images with their output-domain partners; batches are :class:`kdlab.data.Batch` with
    ``x`` = source [B, C, H, W] and ``target`` = output image [B, C_t, H, W], both float32 in [-1, 1],
    ``y`` = the source image's label (None when unlabelled) and ``index`` = the rows.

    A subclass of :class:`InMemoryDataset` (``images`` = ``source``), so ``make_loader`` serves it
    batch-wise, ``transfer_info`` calls it indexed and a teacher cache can gather by ``index``.

    Augmentation (training only; random crop with black padding, flip where allowed, as
    :class:`InMemoryDataset`): a paired row's source and target get the SAME crop offset and flip (they
    are stacked on the channel axis and augmented as one image), so they stay pixel-aligned; an
    unpaired row's two images get independent draws (``target_hflip`` for the output domain).

    Args:
        source: uint8 [N, C, H, W].
        target: uint8 [M, C_t, H', W']: for ``'paired'`` row-aligned with ``source`` (M = N, H' = H,
            W' = W); for ``'unpaired'`` the output domain's images (each once; the real set of FID).
        pairing: ``'paired'`` or ``'unpaired'``.
        labels: int [N] class of each source image, or None (unlabelled: ``y = None``).
        target_index: int [N] row of ``target`` paired with each source row (default ``arange(N)``
            for paired data; required for unpaired data).
        augment, hflip, pad, generator: as :class:`InMemoryDataset` (``hflip`` for the source domain,
            and for both images of a paired row).
        target_hflip: flips allowed in the output domain of an unpaired task (default ``hflip``).
        files: optional (source file, target file) names per row, named in size errors.

    Attributes:
        source, target: the uint8 tensors above; labels: int64 [N] (zeros when unlabelled);
        target_index: int64 [N].

    Raises:
        ValueError: bad dtypes or shapes; ``pairing`` not paired/unpaired; paired images whose
            (H, W) differ (names both shapes and the files when known) or counts differ;
            ``target_index`` outside ``[0, M)``.
    """

    def __init__(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        pairing: str,
        labels: Optional[torch.Tensor] = None,
        target_index: Optional[torch.Tensor] = None,
        augment: bool = False,
        *,
        hflip: bool = True,
        target_hflip: Optional[bool] = None,
        pad: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        files: Optional[Sequence[Tuple[str, str]]] = None,
    ) -> None:
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing = {pairing!r}; accepted: {', '.join(PAIRINGS)}")
        source, target = _as_images(source, "source"), _as_images(target, "target")
        n = source.shape[0]
        if pairing == PAIRED:
            if target.shape[0] != n:
                raise ValueError(f"paired data: {n} source images but {target.shape[0]} targets")
            if source.shape[2:] != target.shape[2:]:
                where = f" (files {files[0][0]} and {files[0][1]})" if files else ""
                raise ValueError(f"paired data: input images are {tuple(source.shape[1:])} (C, H, W) but targets are "
                                 f"{tuple(target.shape[1:])}{where}; input and target must have the same H x W")
        if target_index is None:
            if pairing == UNPAIRED:
                raise ValueError("unpaired data needs target_index: the output-domain row of each source row")
            target_index = torch.arange(n)
        target_index = torch.as_tensor(target_index, dtype=torch.int64).cpu().reshape(-1)
        if target_index.shape[0] != n or (n and (int(target_index.min()) < 0 or int(target_index.max()) >= target.shape[0])):
            raise ValueError(f"target_index must hold {n} rows in [0, {target.shape[0]}), got {tuple(target_index.shape)}")
        labelled = labels is not None
        lab = torch.zeros(n, dtype=torch.int64) if labels is None else labels
        c = source.shape[1]
        super().__init__(source, lab, (0.5,) * c, (0.5,) * c, augment, hflip=hflip, pad=pad,
                         generator=generator, labelled=labelled)
        self.target = target
        self.target_index = target_index.contiguous()
        self.pairing = pairing
        self.target_hflip = self.hflip if target_hflip is None else bool(target_hflip)
        self.files = list(files) if files is not None else None
        self._target_np = self.target.numpy()

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_target_np", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._target_np = self.target.numpy()

    @property
    def source(self) -> torch.Tensor:
        """uint8 [N, C, H, W]: the source-domain images (the same tensor as ``images``)."""
        return self.images

    @property
    def target_channels(self) -> int:
        return int(self.target.shape[1])

    def targets_of_rows(self) -> torch.Tensor:
        """uint8 [N, C_t, H, W]: the output image of every row (``target[target_index]``)."""
        return self.target[self.target_index]

    def _pair(self, index: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        src = np.take(self._images_np, index, axis=0)
        tgt = np.take(self._target_np, self.target_index.numpy()[index], axis=0)
        if self.augment:
            if self.pairing == PAIRED:  # one draw for both: stack on C
                c = src.shape[1]
                both = self._augment(np.concatenate([src, tgt], axis=1))
                src, tgt = both[:, :c], both[:, c:]
            else:
                src = self._augment(src)
                tgt = self._augment(tgt, hflip=self.target_hflip)
        return src, tgt

    @staticmethod
    def _to_unit(imgs: np.ndarray) -> torch.Tensor:
        x = imgs.astype(np.float32)
        x *= 1.0 / 127.5
        x -= 1.0
        return torch.from_numpy(x)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """A batch in one index op: ``Batch(x, y, index, target)`` (see the class docstring)."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        src, tgt = self._pair(index)
        y = torch.from_numpy(np.take(self._labels_np, index)) if self.labelled else None
        return Batch(x=self._to_unit(src), y=y, index=torch.from_numpy(index), target=self._to_unit(tgt))

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """One row: ``(x float32 [C, H, W], target float32 [C_t, H, W])``, both in [-1, 1]."""
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        b = self.__getitems__([i % n])
        return b.x[0], b.target[0]

    def subset(self, indices: torch.Tensor, augment: Optional[bool] = None) -> "TranslationDataset":
        """The given rows (copied) with the same settings; an unpaired subset keeps the whole output domain."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        paired = self.pairing == PAIRED
        return TranslationDataset(
            self.images[idx], self.target[self.target_index[idx]] if paired else self.target, self.pairing,
            self.labels[idx] if self.labelled else None, None if paired else self.target_index[idx],
            self.augment if augment is None else augment, hflip=self.hflip, target_hflip=self.target_hflip,
            pad=self.pad, generator=self.generator,
            files=[self.files[i] for i in idx.tolist()] if self.files is not None else None,
        )

    def __repr__(self) -> str:
        return (f"TranslationDataset({self.pairing}, n={len(self)}, source={self.shape}, "
                f"target={tuple(self.target.shape[1:])}, augment={self.augment})")


__all__ = ["TranslationDataset", "PAIRED", "UNPAIRED", "PAIRINGS"]
