"""A spec's further teachers: ``teachers:``, and the rows that learn from one of them (``teacher:``).

Some tables need a second trained network beside the spec's ``teacher`` (e.g. the Jacobian paper's
Table 3 oracle starts from a VGG-9 trained on the source task, the other rows learn from a ResNet)::

    teacher: jacobian_lwf_teacher         # the spec's teacher: every row's teacher.checkpoint by default
    teacher_set: [model.name=resnet20]
    teachers:                             # name -> key=value sets on top of the teacher's (its recipe,
      source-vgg9: [model.name=vgg9]      # common and teacher_set), trained once as <name>-teacher-<name>
    methods:
      - {label: Oracle, recipe: jacobian_lwf, teacher: source-vgg9, set: [players.init_from_teacher=true]}

A ``scales`` entry may replace ``teachers`` (as it replaces ``seeds`` or ``columns``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from kdlab.config import ConfigError

__all__ = ["parse_teachers", "check_row_teachers"]


def parse_teachers(value: Any, has_teacher: bool) -> Dict[str, List[str]]:
    """The ``teachers`` mapping: name -> its ``key=value`` sets.

    Args:
        value: the spec's ``teachers`` (None: none).
        has_teacher: the spec names a ``teacher`` recipe the further teachers start from.

    Raises:
        ConfigError: not a mapping; a name that is not run-name safe; sets that are not a list of
            ``key=value`` strings; further teachers without a spec ``teacher``.
    """
    from kdlab.compare.scales import str_list as _str_list
    from kdlab.compare.spec import slugify

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"compare spec key 'teachers' must be a mapping name -> [key=value, ...]; got {value!r}")
    if value and not has_teacher:
        raise ConfigError("compare spec key 'teachers': further teachers start from the spec's 'teacher' recipe; "
                          "add 'teacher: RECIPE' or remove 'teachers'")
    out: Dict[str, List[str]] = {}
    for name, sets in value.items():
        if not isinstance(name, str) or slugify(name) != name.lower() or name.lower() == "teacher":
            raise ConfigError(f"teachers: name {name!r}: use letters, digits, '.' or '-' (it is part of run names), "
                              "not 'teacher'")
        out[name] = _str_list(sets, f"teachers.{name}")
    return out


def check_row_teachers(rows: Sequence[Any], teachers: Dict[str, List[str]]) -> None:
    """Every row's ``teacher`` (None: the spec's) is a name of ``teachers``.

    Raises:
        ConfigError: names the row, its teacher and the accepted names.
    """
    for row in rows:
        name: Optional[str] = getattr(row, "teacher", None)
        if name is not None and name not in teachers:
            raise ConfigError(f"method row {row.label!r}: teacher {name!r} is not under 'teachers:'; accepted: "
                              f"{', '.join(teachers) or 'none (add a teachers: mapping)'}")
