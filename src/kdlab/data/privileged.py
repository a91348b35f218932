"""Privileged inputs: a second view of each example that only the teacher sees.

KDGAN's tag-recommendation task gives the teacher text that the classifier never sees (Wang et al.
2018, sec. 5; "learning using privileged information", Vapnik & Vashist 2009; generalized
distillation, Lopez-Paz et al. 2016). :class:`PrivilegedDataset` provides the image analogue on
real data: the classifier's input is a DEGRADED image and the teacher's extra input is the CLEAN
image, so the extra input carries real information (the lost detail).

Batches carry ``x`` = the degraded view [B,C,H,W] (what the student/classifier sees) and
``x_teacher`` = the clean view (:attr:`kdlab.data.Batch.teacher_input`, what a teacher sees).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from kdlab.data.batch import Batch
from kdlab.data.memory import InMemoryDataset

DEGRADATIONS = ("downsample", "mask")


def degrade(x: torch.Tensor, kind: str = "downsample", factor: int = 4) -> torch.Tensor:
    """Deterministically degrade normalised images ``[B, C, H, W]``.

    * ``'downsample'``: average-pool by ``factor`` then nearest upsampling (28x28 -> 7x7 -> 28x28 for 4).
    * ``'mask'``: the bottom ``1 - 1/factor`` of the rows set to the image minimum (0 = black
      after de-normalising is not needed: the value is the per-image minimum).

    Raises:
        ValueError: unknown ``kind`` (lists them) or ``factor`` < 1.
    """
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; accepted: {', '.join(DEGRADATIONS)}")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"degradation factor must be an integer >= 1, got {factor!r}")
    if kind == "downsample":
        h, w = x.shape[-2:]
        small = F.avg_pool2d(x, factor, ceil_mode=True)
        return F.interpolate(small, size=(h, w), mode="nearest")
    keep = max(1, x.shape[-2] // factor)
    out = x.clone()
    low = x.flatten(1).min(dim=1).values.view(-1, 1, 1, 1)
    out[..., keep:, :] = low.expand_as(out[..., keep:, :])
    return out


class PrivilegedDataset(InMemoryDataset):
    """An :class:`InMemoryDataset` whose batches carry the clean image as a privileged third entry.

    Args:
        base: the dataset to wrap (its images, labels, normalisation and augmentation are reused;
            an augmented crop/flip is applied once and both views are cut from the same draw).
        kind, factor: the degradation of the classifier's view (:func:`degrade`).
    """

    def __init__(self, base: InMemoryDataset, kind: str = "downsample", factor: int = 4) -> None:
        degrade(torch.zeros(1, 1, 4, 4), kind, factor)  # validate early
        side = int(base.images.shape[-1])
        if kind == "downsample" and factor >= side:  # 1e6 downsampled every image to one pixel, without a word
            raise ValueError(f"data.privileged_factor = {factor} downsamples {side}x{side} images to less than one pixel; "
                             f"accepted with data.privileged=downsample: 1..{side - 1}")
        super().__init__(base.images, base.labels, base.mean, base.std, base.augment,
                         hflip=base.hflip, pad=base.pad, generator=base.generator, labelled=base.labelled)
        self.kind, self.factor = kind, factor

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """A whole batch: ``x`` degraded, ``x_teacher`` clean (one augmentation draw for both)."""
        b = super().__getitems__(indices)
        return Batch(x=degrade(b.x, self.kind, self.factor), y=b.y, x_teacher=b.x, index=b.index)

    def __getitem__(self, i: int):
        """One sample: ``(x_degraded [C,H,W], y, x_clean [C,H,W])``."""
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        b = self.__getitems__(np.array([int(i) % max(len(self), 1)]))
        return b.x[0], b.y[0] if b.y is not None else None, b.x_teacher[0]

    def __repr__(self) -> str:
        return f"PrivilegedDataset(n={len(self)}, degrade={self.kind!r} x{self.factor}, augment={self.augment})"
