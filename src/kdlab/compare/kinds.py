"""What a comparison's rows train and what they learn from, checked before anything trains.

A row is of one of three kinds, each with its own metrics (:data:`kdlab.compare.claims.METRICS`):

* **classifier** (a classifier student: ``distill``, ``kdgan``, ``codistill``...; accuracy);
* **generator** (a student generator of latent inputs, e.g. ``gan-compression``'s MSE and joint students of
  Aguinaldo et al. 2019, GCC / CAGC on SAGAN; FID/KID/IS against real images);
* **image-to-image** (a student translation generator, ``i2i-distill``: OMGD, CAT, GAN-Compression of Kang et
  al. 2022 Tables 1, 2 and 4; FID/KID, and MAE/SSIM/domain accuracy on a paired task).

Each learns from a teacher of its own kind, named by the row's ``teacher.checkpoint``: the spec's teacher, an
``init:`` run (``@init:NAME``; e.g. a ``gan`` run, as ``kdlab train-gan``, or a ``pix2pix`` / ``cyclegan`` run),
or an existing run directory / weights file. Refused, with the reason:

* a row whose method is none of them (a teacher method such as ``gan`` or ``pix2pix``);
* a row whose teacher is of another kind (a classifier teacher for a generator row, a translation generator
  for a latent-input one...): read from the planned run's method and model, or from an existing file's format
  and generator name (a ``.ckpt`` is checked when the run loads it);
* a generator or image-to-image row without a teacher, or whose teacher is neither planned nor an existing path;
* rows of several kinds in one comparison (their metrics are not comparable: one report, one kind).
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
    "image-to-image": "a translation teacher: a run of method pix2pix or cyclegan (e.g. an init: run with recipe "
                      "pix2pix_edges2fashion, referred to as teacher.checkpoint=@init:NAME), or its .safetensors",
}
#: the kind of the rows whose method trains a generator of these inputs
_GENERATOR_KINDS = {"latent": "generator", "image": "image-to-image"}
#: what a network of each kind is called in messages
_NOUN = {"classifier": "classifier", "generator": "generator", "image-to-image": "image-to-image generator"}


def _a(word: str) -> str:
    """``word`` with its indefinite article (``an image-to-image ...``, ``a generator``)."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _accepted_students() -> Dict[str, List[str]]:
    """Row kind -> the registry's student methods of that kind (method ``teacher`` is a classifier row too:
    a row trained by cross entropy alone)."""
    from kdlab.methods import METHODS

    out: Dict[str, List[str]] = {"classifier": [], "generator": [], "image-to-image": []}
    for name in METHODS.names():
        cls = METHODS.get(name)
        if cls.kind == "classifier":
            out["classifier"].append(name)
        elif cls.kind == "generator" and cls.role == "student" and getattr(cls, "inputs", None) in _GENERATOR_KINDS:
            out[_GENERATOR_KINDS[cls.inputs]].append(name)
    return out


def row_kind(method: str) -> str:
    """``"classifier"``, ``"generator"`` (latent inputs) or ``"image-to-image"``: the kind of rows method
    ``method`` trains."""
    from kdlab.methods import METHODS

    cls = METHODS.get(method)
    return _GENERATOR_KINDS[getattr(cls, "inputs", "latent")] if cls.kind == "generator" and cls.role == "student" else cls.kind


def check_row_method(label: str, method: str) -> str:
    """The kind of a row's method (:func:`row_kind`); refuses what compare cannot report.

    Raises:
        ConfigError: a teacher method (``gan``, ``pix2pix``...); names the row, the method and the accepted
            methods of each kind.
    """
    from kdlab.methods import METHODS

    cls = METHODS.get(method)
    accepted = _accepted_students()
    if any(method in names for names in accepted.values()):
        return row_kind(method)
    what = f"a {cls.kind} {cls.role}" + (f" of {cls.inputs} inputs" if getattr(cls, "inputs", None) else "")
    raise ConfigError(f"method row {label!r}: method {method!r} trains {what}; compare's rows are students: accepted "
                      f"methods: classifier rows {', '.join(accepted['classifier'])}; generator rows (latent inputs) "
                      f"{', '.join(accepted['generator'])}; image-to-image rows {', '.join(accepted['image-to-image'])}")


def teacher_kind(path: str, planned: Dict[str, Tuple[str, Any]]) -> Tuple[Optional[str], str]:
    """The kind of network ``path`` (a row's ``teacher.checkpoint``) holds, and its description.

    Args:
        path: the row's ``teacher.checkpoint``.
        planned: run directory -> (what the spec calls it, resolved config) of the runs this comparison
            trains before the rows (its teachers and init runs).

    Returns:
        (``"classifier"`` | ``"generator"`` (latent inputs) | ``"image-to-image"`` | None where it cannot be
        told without loading: a ``.ckpt``, a file of another format; or where nothing is there yet, with
        description ``"missing"``).
    """
    from kdlab.methods import METHODS

    if path in planned:
        name, cfg = planned[path]
        cls = METHODS.get(cfg.method)
        kind = cls.kind
        if kind == "generator":  # a translation generator (pix2pix, CycleGAN) teaches image-to-image rows only
            from kdlab.models.gan import generator_input_kind

            kind = _GENERATOR_KINDS[generator_input_kind(cfg.model.name)]
        return kind, f"{name} (its method {cfg.method!r} trains {_a(kind)} {cls.role})"
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
        meta = read_safetensors_metadata(weights)
    except (OSError, ValueError):  # no weights there, or not a safetensors file: the run will say so
        return None, f"{path!r}"
    fmt, kind = meta.get("format"), {SAFETENSORS_FORMAT: "classifier"}.get(meta.get("format"))
    if fmt == GENERATOR_FORMAT:
        from kdlab.models.gan import generator_input_kind

        try:
            kind = _GENERATOR_KINDS[generator_input_kind(meta.get("arch", ""))]
        except (KeyError, ValueError):  # an unregistered generator: the run will say so
            kind = None
    return kind, f"{str(weights)!r} (format {fmt!r})"


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
        where = f"method row {cell.row.label!r} (method {cell.cfg.method!r}, {_a(kind)} student)"
        if path is None:
            if kind != "classifier":
                raise ConfigError(f"{where} has no teacher.checkpoint; accepted: {HINTS[kind]}")
            continue
        have, what = teacher_kind(str(path), planned)
        if have is None and what == "missing" and kind != "classifier":
            raise ConfigError(f"{where}: teacher.checkpoint {str(path)!r} is neither a run of this comparison nor an "
                              f"existing path; accepted: {HINTS[kind]}")
        if have is not None and have != kind:
            raise ConfigError(f"{where}: its teacher is {what}, which holds no {_NOUN[kind]} but {_a(_NOUN[have])}; "
                              f"{_a(kind)} row learns from {HINTS[kind]}")


def comparison_kind(labels_kinds: Sequence[Tuple[str, str]]) -> str:
    """The one kind of a comparison's rows (``(label, kind)`` pairs, in row order).

    Raises:
        ConfigError: rows of several kinds (names two of them).
    """
    first_label, first = labels_kinds[0]
    for label, kind in labels_kinds:
        if kind != first:
            raise ConfigError(f"method rows {first_label!r} ({first} student) and {label!r} ({kind} student) are of "
                              "different kinds; one comparison reports one kind (accuracy, FID/KID/IS of latent "
                              "generators, or translation FID/MAE/SSIM): put them in separate specs")
    return first
