"""From a :class:`~kdlab.compare.spec.CompareSpec` to the runs it needs, every config resolved and
checked before anything trains.

:func:`plan_compare` resolves the teacher's run (when the spec trains one) and one cell per
(row, seed) with the grid runner's :func:`kdlab.experiments.grid.resolve`, so an unknown method,
term, term key or value fails here with the row named; it then checks what a config alone cannot:
every row trains a student of one kind (classifier, generator or image-to-image) from a teacher of that kind
(:mod:`kdlab.compare.kinds`), and the data budget fits the data (``data.n_per_class`` no larger than
the smallest class left after the validation split; no ``n_per_class`` beside a transfer source that
ignores it).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import OmegaConf

from kdlab.compare.claims import check_metrics, default_comparisons
from kdlab.compare.spec import CompareSpec, MethodRow, find_config
from kdlab.config import ConfigError
from kdlab.experiments import grid
from kdlab.registry import UnknownNameError

__all__ = ["Cell", "Plan", "plan_compare", "set_threads", "worker_threads", "check_results_dir", "MARKER"]

#: a teacher given as a file of weights rather than a recipe
WEIGHT_SUFFIXES = (".safetensors", ".ckpt")


@dataclass
class Cell:
    """One run of the comparison: the sources and overrides :func:`grid.run_cell` takes, the resolved
    config (an omegaconf ``DictConfig``; ``cfg.out_dir/cfg.name`` is the run directory) and the registered
    callbacks attached to its training (:mod:`kdlab.compare.analyses`)."""

    row: MethodRow
    seed: int
    sources: List[Any]
    overrides: List[str]
    cfg: Any = None
    callbacks: List[Any] = field(default_factory=list)

    @property
    def run_kwargs(self) -> Dict[str, Any]:
        """``callbacks`` and ``needs`` of :func:`grid.run_cell` (fresh callbacks; {} without any)."""
        from kdlab.compare.analyses import cell_callbacks

        return cell_callbacks(self.callbacks)

    def finished(self) -> bool:
        """Whether the run directory holds a finished run of this config with every file its callbacks write."""
        done = grid.finished_run(self.cfg)
        return done is not None and all((done / f).is_file() for f in self.run_kwargs.get("needs", ()))

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out_dir) / self.cfg.name


@dataclass
class Plan:
    """Everything a comparison runs.

    Attributes:
        spec: the parsed spec.
        out: ``<out_dir>/<name>``, where the report goes.
        teacher: the teacher's cell when the spec trains it, else None.
        teacher_path: the checkpoint every row gets as ``teacher.checkpoint`` (None: the rows' own).
        cells: row-major: every seed of row 0, then row 1, ...
        inits: the init runs (:mod:`kdlab.compare.inits`) the cells refer to, each once, in first-use order.
        threads: ``trainer.threads`` given to each student run by ``--jobs`` (None: torch's default).
        teachers: the spec's further teachers (name -> cell; :mod:`kdlab.compare.teachers`).
    """

    spec: CompareSpec
    out: Path
    teacher: Optional[Cell]
    teacher_path: Optional[str]
    cells: List[Cell] = field(default_factory=list)
    threads: Optional[int] = None
    inits: List[Cell] = field(default_factory=list)  # the spec's init runs the rows use, trained before them
    n_extra: int = 0  # the command line's overrides, last in every cell's overrides
    teachers: Dict[str, Cell] = field(default_factory=dict)
    kind: str = "classifier"  # what the rows train: classifier | generator | image-to-image (kdlab.compare.kinds)

    @property
    def teacher_cells(self) -> List[Cell]:
        """Every teacher run to train before the students: the spec's teacher, then the further ones."""
        return ([self.teacher] if self.teacher else []) + list(self.teachers.values())

    def row_cells(self, row: MethodRow) -> List[Cell]:
        return [c for c in self.cells if c.row is row]


def worker_threads(jobs: int, cores: Optional[int] = None) -> int:
    """CPU threads per run when ``jobs`` runs share the machine: ``max(1, cores // jobs)``."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, int(cores) // max(1, int(jobs)))


def _dotlist(items: Sequence[str]) -> Dict[str, Any]:
    """``key=value`` strings as a plain nested dict (a config source layer)."""
    from kdlab.config import parse_overrides

    return OmegaConf.to_container(parse_overrides(items)) if items else {}


def _resolve(cell: Cell, what: str) -> Any:
    """grid.resolve, with ``what`` (the row and seed) in the message of any config error."""
    try:
        cell.cfg = grid.resolve(cell.sources, cell.overrides)
    except UnknownNameError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    return cell.cfg


def _teacher(spec: CompareSpec, out_dir: Path, extra: Sequence[str],
             further: Optional[str] = None) -> Tuple[Optional[Cell], Optional[str]]:
    """The teacher's cell (a recipe / YAML to train) or its existing checkpoint path; ``further``: the
    spec's further teacher of that name (the teacher's recipe and sets, then its own sets)."""
    if spec.teacher is None:
        return None, None
    path = Path(spec.teacher)
    if further is not None and (path.is_dir() or path.suffix in WEIGHT_SUFFIXES):
        raise ConfigError(f"teachers.{further}: further teachers are trained from the spec's teacher recipe; "
                          f"teacher {spec.teacher!r} is a run or weights: name a recipe")
    if path.is_dir() or (path.is_file() and path.suffix in WEIGHT_SUFFIXES):
        return None, str(path)  # what it holds is checked against the rows (kdlab.compare.kinds)
    if path.suffix in WEIGHT_SUFFIXES:
        raise ConfigError(f"teacher {spec.teacher!r}: no such weights file")
    if len(path.parts) > 1 and not path.exists():  # a path, not a recipe name
        raise ConfigError(f"teacher {spec.teacher!r}: no such run directory, weights or YAML file "
                          f"(a packaged recipe is named without a folder, e.g. demo_teacher)")
    source = find_config(spec.teacher, what="teacher (a recipe, a YAML file, a run directory or weights)")
    slug = "teacher" if further is None else f"teacher-{further}"
    cell = Cell(row=MethodRow(label=slug, slug=slug), seed=0, sources=[source, _dotlist(spec.common)],
                overrides=[*spec.teacher_set, *(spec.teachers[further] if further else []), f"out_dir={out_dir}",
                           f"name={spec.name}-{slug}", *extra])
    cfg = _resolve(cell, f"teacher {spec.teacher!r}" + (f" (teachers.{further})" if further else ""))
    from kdlab.methods import METHODS

    cls = METHODS.get(cfg.method)
    if cls.role != "teacher":  # its kind (classifier / generator) is checked against the rows' (kdlab.compare.kinds)
        able = [n for n in METHODS.names() if METHODS.get(n).role == "teacher"]
        raise ConfigError(f"teacher {spec.teacher!r}: method {cfg.method!r} trains a {cls.kind} {cls.role}; the teacher "
                          f"must be trained by a teacher method: {', '.join(able)} (kdlab train-teacher / train-gan)")
    return cell, str(Path(cfg.out_dir) / cfg.name)


def _init_paths(spec: CompareSpec, row: MethodRow, seed: int, out_dir: Path, extra: Sequence[str],
                inits: Dict[str, Cell], items: Optional[Sequence[str]] = None, where: Optional[str] = None,
                within: Tuple[str, ...] = ()) -> Dict[str, str]:
    """The run directory of each init ``items`` (default: the row's sets) refer to at ``seed``; new init cells
    (and the inits their own sets refer to, first) are added to ``inits`` (run name -> cell).

    Raises:
        ConfigError: an init that refers to itself through its sets (names the chain).
    """
    from kdlab.compare.inits import init_refs, init_run_name, substitute

    paths = {}
    for name in init_refs(row.set if items is None else items, spec.inits, where or f"method row {row.label!r}"):
        if name in within:
            raise ConfigError(f"init {name!r} refers to itself through its sets: "
                              f"{' -> '.join(f'@init:{n}' for n in (*within, name))}; accepted: inits without a cycle")
        init = spec.inits[name]
        s = init.seed if init.seed is not None else seed
        run = init_run_name(spec.name, init, row.column, s)
        if run not in inits:
            deps = _init_paths(spec, row, s, out_dir, extra, inits, init.set, f"init {name!r}", (*within, name))
            sources: List[Any] = ([find_config(init.recipe, what=f"init {name!r} recipe")] if init.recipe else [])
            cols = spec.column_sets.get(row.column, []) if init.per_column else []
            column = row.column if init.per_column else None
            cell = Cell(row=MethodRow(label=f"init {name}", slug=run, column=column), seed=s,
                        sources=sources + [_dotlist(spec.common)],
                        overrides=[f"out_dir={out_dir}", *cols, *substitute(init.set, deps), f"seed={s}",
                                   f"data.subset_seed={spec.subset_seed if spec.subset_seed is not None else s}",
                                   f"name={run}", *init.extra(extra)], callbacks=list(init.callbacks))
            inits[run] = cell
            _resolve(cell, f"init {name!r} (seed {s}{f', column {column}' if column else ''})")
        paths[name] = str(inits[run].run_dir)
    return paths


def _student_cell(spec: CompareSpec, row: MethodRow, seed: int, out_dir: Path, teacher: Optional[str],
                  extra: Sequence[str], inits: Optional[Dict[str, Cell]] = None) -> Cell:
    sources: List[Any] = [row.recipe] if row.recipe is not None else [{"method": "distill"}]
    # the label as a mapping, not a key=value string: YAML would read "[x] CE" as a list, "1e3" as a number
    sources += [_dotlist(spec.common), spec.student, {"data": dict(spec.budget)} if spec.budget else {},
                {"label": row.label}]
    overrides = [f"out_dir={out_dir}"] + ([f"teacher.checkpoint={teacher}"] if teacher else [])
    from kdlab.compare.inits import substitute

    paths = _init_paths(spec, row, seed, out_dir, extra, inits if inits is not None else {})
    subset = spec.subset_seed if spec.subset_seed is not None else seed
    overrides += [*substitute(row.set, paths), f"seed={seed}", f"data.subset_seed={subset}",
                  f"name={spec.name}-{row.slug}-s{seed}", *extra]
    cell = Cell(row=row, seed=seed, sources=sources, overrides=overrides, callbacks=list(row.callbacks))
    _resolve(cell, f"method row {row.label!r} (seed {seed})")
    return cell


def set_threads(plan: Plan, threads: int) -> None:
    """Give every CPU student run that does not set ``trainer.threads`` this many threads (an override
    before the command line's, so it is recorded in the run's config.yaml); the teacher is left alone.

    Raises:
        ValueError: ``threads`` below 1.
    """
    from omegaconf import read_write

    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads = {threads}; accepted: an integer >= 1")
    for cell in plan.cells:
        if cell.cfg.trainer.threads is None and cell.cfg.trainer.accelerator == "cpu":
            cell.overrides.insert(len(cell.overrides) - plan.n_extra, f"trainer.threads={threads}")
            # the one key set in place: resolving the whole config again doubled the planning time
            with read_write(cell.cfg):
                cell.cfg.trainer.threads = threads
    plan.threads = threads


def _check_budget(cells: Sequence[Cell]) -> None:
    """Budget vs data: ``n_per_class`` beside an unlabelled transfer source, or larger than a class."""
    from kdlab.runner import check_budget_source

    labels: Dict[Tuple[Any, ...], Any] = {}
    for cell in cells:
        d = cell.cfg.data
        if d.n_per_class is None:
            continue
        where = f"method row {cell.row.label!r}"
        check_budget_source(d, f"{where}: ")
        key = (d.name, d.root, d.image_size, tuple(d.classes) if d.classes is not None else None)
        if key not in labels:
            labels[key] = _train_labels(d)
        if labels[key] is None:  # data not available here: the run itself will say so in its row
            continue
        smallest = _smallest_class(labels[key], d.val_size, d.subset_seed)
        if d.n_per_class > smallest:
            raise ConfigError(f"{where}: data.n_per_class = {d.n_per_class} is larger than the smallest class of "
                              f"{d.name!r}'s training split after the {d.val_size}-image validation split "
                              f"({smallest} images); accepted: 1..{smallest}")


@functools.lru_cache(maxsize=8)
def _labels(name: str, root: Optional[str], image_size: Optional[int]) -> Any:
    from kdlab.data import load_split

    return load_split(name, "train", root=root, download=False, image_size=image_size)[1]


def _train_labels(d: Any) -> Any:
    """The training labels of a config's data set (after ``data.classes``), or None where the data
    cannot be loaded without a download or is a translation task (pairs of images, checked by the run)."""
    import torch

    from kdlab.data.paths import DataNotFoundError

    from kdlab.data import dataset_spec

    if dataset_spec(d.name, image_size=d.image_size).pairing is not None:  # a translation task: the run checks it
        return None
    try:
        y = _labels(d.name, d.root, d.image_size)
    except (DataNotFoundError, OSError, RuntimeError):
        return None
    if d.classes is not None:
        keep = torch.tensor([int(c) for c in d.classes])
        y = y[torch.isin(y, keep)]
        y = torch.searchsorted(torch.sort(keep).values, y)  # any 0..n-1 relabelling keeps the class sizes
    return y


def _smallest_class(labels: Any, val_size: Any, seed: int) -> int:
    """Images of the smallest class left for training after the validation split (as build_datasets)."""
    import torch

    from kdlab.data.splits import train_val_split

    train_idx, _ = train_val_split(labels, val_size, seed)
    counts = torch.bincount(labels[train_idx].long())
    return int(counts[counts > 0].min()) if counts.numel() else 0


#: the file of a report directory that marks it as the results of one experiment (``experiment: <name>``)
MARKER = "results.json"


def check_results_dir(report_dir: Path, experiment: str) -> None:
    """Refuse to write experiment ``experiment`` into (or under) the results folder of another one: the
    report directory and each of its parents is checked for a :data:`MARKER` naming another experiment.

    Raises:
        ConfigError: names the folder, the experiment it holds and the one asked for.
    """
    import json

    for folder in [Path(report_dir), *Path(report_dir).resolve().parents]:
        marker = folder / MARKER
        if not marker.is_file():
            continue
        try:
            owner = json.loads(marker.read_text(encoding="utf-8")).get("experiment")
        except (OSError, ValueError, AttributeError):
            continue  # not a results file of kdlab's: no claim on the folder
        if owner is not None and owner != experiment:
            raise ConfigError(f"output directory {str(report_dir)!r}: {str(folder)!r} holds the results of experiment "
                              f"{owner!r}; experiment {experiment!r} is not written there: choose another --out "
                              f"(e.g. results/, which gets results/{experiment}/<scale>/)")


def plan_compare(spec: CompareSpec, out_dir: Path, extra: Sequence[str] = (), jobs: int = 1,
                 gpus: int = 0, report_dir: Optional[Path] = None) -> Plan:
    """Resolve and check every run of ``spec``; nothing is trained or written.

    Args:
        spec: the comparison.
        out_dir: parent of the run directories and of the report directory ``<out_dir>/<name>``.
        extra: ``key=value`` overrides of every run (the teacher included), applied last.
        jobs: parallel student runs; on CPU (``gpus == 0``) with ``jobs > 1`` each student run gets
            ``trainer.threads = cores // jobs`` unless its config sets threads.
        gpus: CUDA devices the runs are spread over (one process each; threads are left alone).
        report_dir: where the report goes (default ``<out_dir>/<name>``); refused inside another
            experiment's results folder (:func:`check_results_dir`).

    Returns:
        A :class:`Plan`.

    Raises:
        ConfigError: naming the row (and seed) and the bad key or value: an unknown method, recipe,
            term or key; a row method that is no student compare reports (a teacher method); a teacher
            of another kind than its row's, rows of several kinds; an
            inconsistent data budget; a missing teacher; a compared
            metric a row does not produce; a report directory inside another experiment's results.
    """
    out_dir = Path(out_dir)
    report_dir = Path(report_dir) if report_dir is not None else out_dir / spec.name
    for folder in (report_dir, out_dir):  # neither the report nor the runs go into another experiment's results
        check_results_dir(folder, spec.name)
    teacher_cell, teacher_path = _teacher(spec, out_dir, extra)
    plan = Plan(spec=spec, out=report_dir, teacher=teacher_cell, teacher_path=teacher_path,
                n_extra=len(extra))
    paths = {None: teacher_path}
    for name in spec.teachers:
        plan.teachers[name], paths[name] = _teacher(spec, out_dir, extra, further=name)
    inits: Dict[str, Cell] = {}
    for row in spec.rows:
        for seed in row.seeds or spec.seeds:
            plan.cells.append(_student_cell(spec, row, seed, out_dir, paths[row.teacher], extra, inits))
    plan.inits = list(inits.values())
    names: Dict[str, str] = {}
    for cell in plan.teacher_cells + plan.inits + plan.cells:
        if cell.cfg.name in names:  # e.g. name= among the command line's overrides (it comes last)
            raise ConfigError(f"runs of {names[cell.cfg.name]!r} and {cell.row.label!r} are both named "
                              f"{cell.cfg.name!r}; leave name= to compare (it names runs <name>-<row>-s<seed>)")
        names[cell.cfg.name] = cell.row.label
    from kdlab.compare.kinds import check_row_method, check_row_teachers_kind, comparison_kind

    kinds = {c.row.slug: check_row_method(c.row.label, c.cfg.method) for c in plan.cells}
    plan.kind = comparison_kind([(r.label, kinds[r.slug]) for r in spec.rows])
    check_row_teachers_kind(plan.cells, {str(c.run_dir): (f"run {c.cfg.name!r}", c.cfg)
                                         for c in plan.teacher_cells + plan.inits})
    if not spec.declared and plan.kind != "classifier":  # the post-hoc default on the kind's headline metric
        spec.comparisons = default_comparisons(spec.rows, plan.kind)
    check_metrics(spec.comparisons, kinds, {r.slug: list(plan.row_cells(r)[0].cfg.eval.noise_sigmas)
                                            if kinds[r.slug] == "classifier" else [] for r in spec.rows},
                  {r.slug: [m for u in r.callbacks for m in u.metrics] for r in spec.rows})
    _check_budget(plan.cells)
    if jobs > 1 and not gpus:
        set_threads(plan, worker_threads(jobs))
    return plan
