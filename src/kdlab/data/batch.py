"""The batch every method and the loop exchange: :class:`Batch`.

A batch names its parts instead of relying on tuple positions, so a method can tell a labelled
batch from an unlabelled one (out-of-domain transfer data), find the teacher's own view of the
input (privileged information) and the rows' indices into the transfer set (memory banks such as
CRD's), and a data-free method receives only a batch size.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

import torch


@dataclass
class Batch:
    """One training or evaluation batch.

    Attributes:
        x: inputs float32 [B, C, H, W] (normalised with the teacher domain's mean/std), or None in a
            data-free batch (the method synthesises its inputs).
        y: int64 labels [B] in 0..K-1, or None for unlabelled (out-of-domain or data-free) batches.
        x_teacher: the teacher's view of the same examples [B, C', H', W'] (privileged input), or None
            when the teacher sees ``x``.
        index: int64 [B], each row's index into its data set (the transfer set while training).
        target: the output-domain image of an image-to-image task [B, C_t, H, W] in [-1, 1]: the ground
            truth of a paired task (the photo of an edge map), an independently drawn image of the
            output domain for an unpaired task, None otherwise.
        size: B; taken from ``x`` (else ``index``) when not given.

    Raises:
        ValueError: no way to tell the batch size (``x``, ``index`` and ``size`` all missing), or parts
            of different lengths.
    """

    x: Optional[torch.Tensor] = None
    y: Optional[torch.Tensor] = None
    x_teacher: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None
    target: Optional[torch.Tensor] = None
    size: int = -1

    def __post_init__(self) -> None:
        if self.size < 0:
            ref = self.x if self.x is not None else self.index
            if ref is None:
                raise ValueError("a Batch needs x, index or size to know its batch size")
            self.size = int(ref.shape[0])
        for f in ("x", "y", "x_teacher", "index", "target"):
            t = getattr(self, f)
            if t is not None and int(t.shape[0]) != self.size:
                raise ValueError(f"Batch.{f} has {int(t.shape[0])} rows; the batch has {self.size}")

    def __len__(self) -> int:
        return self.size

    @property
    def teacher_input(self) -> Optional[torch.Tensor]:
        """What the teacher sees: ``x_teacher`` when the data set has a privileged view, else ``x``."""
        return self.x if self.x_teacher is None else self.x_teacher

    @property
    def labelled(self) -> bool:
        return self.y is not None

    def pin_memory(self) -> "Batch":
        """The same batch in page-locked host memory (``DataLoader(pin_memory=True)`` calls this)."""
        return Batch(**{f.name: (v.pin_memory() if isinstance(v, torch.Tensor) else v)
                        for f in fields(self) for v in [getattr(self, f.name)]})

    def to(self, device: Any, non_blocking: bool = False) -> "Batch":
        """The same batch with every tensor on ``device`` (this one when they all are: the loop asks every
        step, and a new Batch costs its checks)."""
        device = torch.device(device)
        if all(v is None or v.device == device for v in (self.x, self.y, self.x_teacher, self.index, self.target)):
            return self
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = v.to(device, non_blocking=non_blocking)
        return Batch(**moved)


def as_batch(item: Any) -> Batch:
    """A :class:`Batch` from a Batch, an ``(x, y)`` or ``(x, y, x_teacher)`` tuple (e.g. the default
    collate of a torchvision dataset), or a bare input tensor.

    Raises:
        TypeError: anything else.
    """
    if isinstance(item, Batch):
        return item
    if isinstance(item, torch.Tensor):
        return Batch(x=item)
    if isinstance(item, (tuple, list)) and 1 <= len(item) <= 3:
        return Batch(*item)
    raise TypeError(f"cannot make a Batch from {type(item).__name__}; expected Batch, tensor or (x, y[, x_teacher])")
