"""Build-time shape checks shared by the feature-map terms (fsp, nst, ab, ft)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from kdlab.config import ConfigError
from kdlab.terms.base import TermContext

Shape = Tuple[int, ...]


def map_shapes(pairs: Sequence[Tuple[str, str]], ctx: TermContext, term: str,
               same_size: bool = False) -> List[Tuple[Shape, Shape]]:
    """Per-sample ``(student shape, teacher shape)`` of each ``(student, teacher)`` pair, all (C, H, W).

    Raises:
        ConfigError: an unknown feature (see :meth:`TermContext.student_shapes`), a feature that is not a
            map [B, C, H, W], or (``same_size``) a pair of different spatial sizes; names the term and both
            features' shapes.
    """
    s_shapes = ctx.student_shapes([a for a, _ in pairs], term)
    t_shapes = ctx.teacher_shapes([b for _, b in pairs], term)
    out = []
    for a, b in pairs:
        s, t = tuple(s_shapes[a]), tuple(t_shapes[b])
        if len(s) != 3 or len(t) != 3:
            raise ConfigError(f"term {term!r} needs feature maps [B, C, H, W]: student {a!r} is {s}, "
                              f"teacher {b!r} is {t} (per sample)")
        if same_size and s[1:] != t[1:]:
            raise ConfigError(f"term {term!r} needs equal spatial sizes: student {a!r} is {s}, teacher {b!r} is {t}")
        out.append((s, t))
    return out


def named_shapes(names: Sequence[str], shapes: Dict[str, Shape], who: str, term: str) -> List[Shape]:
    """``shapes[name]`` for each name, each required to be (C, H, W) (ConfigError naming the feature)."""
    out = []
    for n in names:
        shape = tuple(shapes[n])
        if len(shape) != 3:
            raise ConfigError(f"term {term!r} needs feature maps [B, C, H, W]: {who} {n!r} is {shape} (per sample)")
        out.append(shape)
    return out
