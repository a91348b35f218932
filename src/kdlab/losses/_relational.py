"""Input checks shared by the relation-based losses (RKD, PKT, SP, CC): batch-level relations
between the B examples of a batch, so student and teacher need equal B but never equal widths."""
from __future__ import annotations

import torch

from kdlab.losses._common import check_float_tensor


def check_relation_pair(student: torch.Tensor, teacher: torch.Tensor, vectors: bool) -> torch.dtype:
    """Check a (student, teacher) pair for a relational loss and return the dtype to compute in.

    Args:
        student, teacher: float tensors with the batch first; ``vectors``: both must be [B, D]
            (else any [B, ...] of rank >= 2).

    Returns:
        ``torch.float64`` if either tensor is float64, else ``torch.float32`` (relations of float16
        features lose too much precision: squared norms and B x B sums).

    Raises:
        TypeError: not a tensor. ValueError: not floating point, wrong rank, or different batch
        sizes (the message names both shapes).
    """
    check_float_tensor(student, "student")
    check_float_tensor(teacher, "teacher")
    s, t = tuple(student.shape), tuple(teacher.shape)
    if vectors and (student.dim() != 2 or teacher.dim() != 2):
        raise ValueError(f"expected embeddings [B, D] (turn maps [B, C, H, W] into vectors with "
                         f"kdlab.losses.adapters.to_vector); got student {s} and teacher {t}")
    if not vectors and (student.dim() < 2 or teacher.dim() < 2):
        raise ValueError(f"expected features [B, ...] of rank >= 2; got student {s} and teacher {t}")
    if s[0] != t[0]:
        raise ValueError(f"batch sizes differ: student {s} and teacher {t}")
    wide = student.dtype == torch.float64 or teacher.dtype == torch.float64
    return torch.float64 if wide else torch.float32


def no_relation(student: torch.Tensor) -> torch.Tensor:
    """The value of a relational loss on a batch of one example: 0 (no pair to relate), kept in
    the student's graph so that backward works on a short last batch."""
    return student.sum() * 0.0
