"""What a comparison's rows train and what they learn from, checked before anything trains.

A row is a **classifier** row (a classifier student: ``distill``, ``kdgan``, ``codistill``...) or a
**generator** row (a student generator of latent inputs, e.g. ``gan-compression``'s MSE and joint students
of Aguinaldo et al. 2019). Each learns from a teacher of its own kind, named by the row's
``teacher.checkpoint``: the spec's teacher, an ``init:`` run (``@init:NAME``; e.g. a ``gan`` run, as
``kdlab train-gan``), or an existing run directory / weights file. Refused, with the reason:

* a row whose method is neither (a generator teacher method such as ``gan``, an image-to-image student such as
  ``i2i-distill``, whose metrics are the translation ones compare does not report);
* a row whose teacher is of the other kind (a classifier teacher for a generator row, a generator for a
  classifier row, an image-to-image generator for a latent-input one): read from the planned run's method
  and model, or from an existing file's format (a file's generator input kind is checked when the run
  loads it);
* a generator row without a teacher, or whose teacher is neither planned nor an existing path;
* rows of both kinds in one comparison (their metrics are not comparable: one report, one kind).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kdlab.config import ConfigError

__all__ = ["row_kind", "check_row_method", "teacher_kind", "check_row_teachers_kind", "comparison_kind", "HINTS"]

#: where a teacher of each kind comes from (the error messages' accepted values)
HINTS = {
    "classifier": "a classifier teacher: a run of kdlab train-teacher (method teacher), its teacher.safetensors, "
                  "or a recipe / init: run of method teacher",
    "generator": "a generator teacher: a run of kdlab train-gan (method gan; e.g. an init: run with recipe "
                 "gan_teacher, referred to as teacher.checkpoint=@init:NAME), or its .safetensors",
}


def _accepted_students() -> Tuple[List[str], List[str]]:
    """(classifier methods, latent-input generator student methods) of the registry."""
    from kdlab.methods import METHODS

    clf, gen = [], []
    for name in METHODS.names():
        cls = METHODS.get(name)
        if cls.kind == "classifier":  # method teacher too: a row trained by cross entropy alone
            clf.append(name)
        elif cls.kind == "generator" and cls.role == "student" and getattr(cls, "inputs", None) == "latent":
            gen.append(name)
    return clf, gen


def row_kind(method: str) -> str:
    """``"classifier"`` or ``"generator"``: the kind of network method ``method`` trains."""
    from kdlab.methods import METHODS

    return METHODS.get(method).kind


def check_row_method(label: str, method: str) -> str:
    """The kind of a row's method; refuses what compare cannot report.

    Raises:
        ConfigError: a teacher method, or a generator student of image inputs; names the row, the method
            and the accepted methods of both kinds.
    """
    from kdlab.methods import METHODS

    cls = METHODS.get(method)
    clf, gen = _accepted_students()
    if method in clf or method in gen:
        return cls.kind
    what = f"a {cls.kind} {cls.role}" + (f" of {cls.inputs} inputs" if getattr(cls, "inputs", None) else "")
    raise ConfigError(f"method row {label!r}: method {method!r} trains {what}; compare's rows are students: accepted "
                      f"methods: classifier rows {', '.join(clf)}; generator rows (latent inputs) {', '.join(gen)}")


def teacher_kind(path: str, planned: Dict[str, Tuple[str, Any]]) -> Tuple[Optional[str], str]:
    """The kind of network ``path`` (a row's ``teacher.checkpoint``) holds, and its description.

    Args:
        path: the row's ``teacher.checkpoint``.
        planned: run directory -> (what the spec calls it, resolved config) of the runs this comparison
            trains before the rows (its teachers and init runs).

    Returns:
        (``"classifier"`` | ``"generator"`` | ``"image-to-image generator"`` (planned runs) | None where it
        cannot be told without loading: a ``.ckpt``,
        a file of another format; or where nothing is there yet, with description ``"missing"``).
    """
    from kdlab.methods import METHODS

    if path in planned:
        name, cfg = planned[path]
        cls = METHODS.get(cfg.method)
        kind = cls.kind
        if kind == "generator":  # a translation generator (pix2pix, CycleGAN) is no teacher of latent-input students
            from kdlab.models.gan import generator_input_kind

            kind = "generator" if generator_input_kind(cfg.model.name) == "latent" else "image-to-image generator"
        return kind, f"{name} (its method {cfg.method!r} trains a {kind} {cls.role})"
    p = Path(path)
    if not p.exists():
        return None, "missing"
    if p.suffix == ".ckpt":
        return None, f"{path!r}"  # checked when the run loads it
    from kdlab.engine.checkpoint import SAFETENSORS_FORMAT, read_safetensors_metadata, resolve_run_file
    from kdlab.engine.generators import GENERATOR_FORMAT

    try:
        weights = resolve_run_file(p, ("teacher.safetensors", "student.safetensors", "generator.safetensors"),
                                   "weights file", "kdlab train-teacher / kdlab train-gan")
        fmt = read_safetensors_metadata(weights).get("format")
    except (OSError, ValueError):  # no weights there, or not a safetensors file: the run will say so
        return None, f"{path!r}"
    kinds = {SAFETENSORS_FORMAT: "classifier", GENERATOR_FORMAT: "generator"}
    return kinds.get(fmt), f"{str(weights)!r} (format {fmt!r})"


def check_row_teachers_kind(cells: Sequence[Any], planned: Dict[str, Tuple[str, Any]]) -> None:
    """Every cell's teacher is of its row's kind (see the module docstring).

    Args:
        cells: the plan's student cells (``row.label``, ``cfg``).
        planned: as :func:`teacher_kind`.

    Raises:
        ConfigError: names the row, its method, its teacher and what it holds, and the accepted teachers.
    """
    for cell in cells:
        kind = row_kind(cell.cfg.method)
        path = cell.cfg.teacher.checkpoint
        where = f"method row {cell.row.label!r} (method {cell.cfg.method!r}, a {kind} student)"
        if path is None:
            if kind == "generator":
                raise ConfigError(f"{where} has no teacher.checkpoint; accepted: {HINTS[kind]}")
            continue
        have, what = teacher_kind(str(path), planned)
        if have is None and what == "missing" and kind == "generator":
            raise ConfigError(f"{where}: teacher.checkpoint {str(path)!r} is neither a run of this comparison nor an "
                              f"existing path; accepted: {HINTS[kind]}")
        if have is not None and have != kind:
            an = "an" if have[0] in "aeiou" else "a"
            raise ConfigError(f"{where}: its teacher is {what}, which holds no {kind} but {an} {have}; a {kind} row "
                              f"learns from {HINTS[kind]}")


def comparison_kind(labels_kinds: Sequence[Tuple[str, str]]) -> str:
    """The one kind of a comparison's rows (``(label, kind)`` pairs, in row order).

    Raises:
        ConfigError: rows of both kinds (names one of each).
    """
    first_label, first = labels_kinds[0]
    for label, kind in labels_kinds:
        if kind != first:
            raise ConfigError(f"method rows {first_label!r} ({first} student) and {label!r} ({kind} student) are of "
                              "different kinds; one comparison reports one kind (accuracy or FID/KID/IS): put them in "
                              "two specs")
    return first
