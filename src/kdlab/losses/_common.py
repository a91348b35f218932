"""The input checks every loss shares (kept apart from ``__init__``: no import cycle)."""
from __future__ import annotations

import math
from typing import Callable, Iterable, List, Sequence, Tuple

import torch



def check_mode(mode: str, accepted: Sequence[str], what: str = "mode") -> str:
    """Return ``mode`` if it is one of ``accepted``; else raise ValueError naming both."""
    if mode not in accepted:
        raise ValueError(f"unknown {what} {mode!r}; accepted: {', '.join(repr(a) for a in accepted)}")
    return mode


def check_positive(value: float, name: str) -> float:
    """Return ``value`` as a float if it is a finite number > 0; else raise ValueError naming it."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_float_tensor(x: torch.Tensor, name: str) -> None:
    """Raise if ``x`` is not a floating-point tensor (naming its type/dtype)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def check_logit_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    """Both must be float tensors of the same shape [B, K]; errors name both shapes."""
    check_float_tensor(student_logits, "student_logits")
    check_float_tensor(teacher_logits, "teacher_logits")
    if student_logits.dim() != 2:
        raise ValueError(
            f"student_logits must have shape [B, K], got {tuple(student_logits.shape)}"
        )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student and teacher logits must have the same shape [B, K]; got student "
            f"{tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}"
        )


def check_feature_pair(student: torch.Tensor, teacher: torch.Tensor, what: str = "features") -> None:
    """Both float tensors of one shape [B, ...] (rank >= 2); errors name both shapes and ``what``."""
    check_float_tensor(student, f"student {what}")
    check_float_tensor(teacher, f"teacher {what}")
    if student.dim() < 2 or student.shape != teacher.shape:
        raise ValueError(f"student and teacher {what} must have the same shape [B, ...]; got student "
                         f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}")


def layer_pairs_checked(students: Iterable[torch.Tensor], teachers: Iterable[torch.Tensor]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``[(student feature, teacher feature), ...]`` of a multi-layer loss.

    Raises:
        ValueError: lists of different or zero length (names both lengths).
    """
    students, teachers = list(students), list(teachers)
    if not students or len(students) != len(teachers):
        raise ValueError(f"need as many student as teacher features (>= 1); got {len(students)} and {len(teachers)}")
    return list(zip(students, teachers))


def sum_over_layers(students: Iterable[torch.Tensor], teachers: Iterable[torch.Tensor],
                    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``sum_l loss(student_l, teacher_l)`` over layer pairs (:func:`layer_pairs_checked`); a ValueError of
    one pair is re-raised naming its layer index."""
    total = None
    for k, (s, t) in enumerate(layer_pairs_checked(students, teachers)):
        try:
            term = loss(s, t)
        except ValueError as e:
            raise ValueError(f"layer {k}: {e}") from None
        total = term if total is None else total + term
    return total

