"""What ``kdlab compare`` compares: a spec (YAML file, packaged spec name or command-line flags).

A spec names one teacher, one student set-up, one data budget, the seeds and the method rows::

    name: demo                      # run names <name>-<row>-s<seed>; report in <out>/<name>/
    title: "LeNet -> MLP, 100 images per class"
    teacher: demo_teacher           # a recipe name / YAML path (trained once as <out>/<name>-teacher),
                                    # or an existing run directory / .safetensors / .ckpt (used as is)
    teacher_set: [trainer.epochs=3] # key=value for the teacher run only
    student:                        # a config mapping merged into every row
      model: {name: mlp, kwargs: {hidden: [100, 100]}}
    budget: {n_per_class: 100}      # data.* keys of the student's data: images per class, or a
                                    # transfer source ({transfer: mnist-digits, transfer_n: 2000})
    seeds: [0, 1, 2]                # seed s also sets data.subset_seed = s (paired subsets),
    subset_seed: 0                  # unless subset_seed fixes one subset for every seed
    common: [data.max_test=2000]    # key=value for every run, the teacher included
    methods:                        # rows; the first row is the reference of the paired tests
      - {label: "CE only", name: ce, recipe: demo_ce}
      - {label: "KD T=8", recipe: demo_kd, set: [objective.student.kd.temperature=8], paper: 81.2}
      - {label: "KD + AT", set: [method=distill, objective.student.kd.weight=1, objective.student.attention.weight=1000]}
    quick:                          # what --quick changes: common/teacher_set lists are appended,
      common: [trainer.epochs=1]    # student is merged, seeds replace the seeds
      student: {trainer: {epochs: 5}}
      seeds: [0]
    teachers: {src2: [model.name=vgg9]}  # further teachers; a row's ``teacher: src2`` learns from one
                                    # (kdlab.compare.teachers)
    launcher: {executor: slurm, partition: gpu, time: 120, gpus_per_run: 1}  # --launcher submitit's
                                    # settings (kdlab.compare.launch.SubmititSettings; docs/launchers.md)

    primary:                        # the claims tested (kdlab.compare.claims): Holm-adjusted, with a verdict
      - {a: "KD T=8", b: "CE only", metric: test_acc_best, direction: greater,
         label: "distillation beats the student alone", paper: "Hinton et al. 2015, Table 1"}
    secondary: []                   # same form: unadjusted, labelled secondary
    columns:                        # optional: every row once per column (e.g. data budgets); rows become
      "5": [data.n_per_class=5]     # "<label> [5]" / <name>-5, comparisons one per column
      "50": {set: [data.n_per_class=50, trainer.epochs=8],  # or a mapping: the column's sets, and
             rows: {kd: [objective.student.kd.temperature=2]}}  # sets of some rows in this column only;
                                    # also only: [rows it holds], seeds: [its seeds] (kdlab.compare.columns)
    scales:                         # optional variants (kdlab reproduce --scale): lists appended, student
      small: {seeds: [0, 1, 2, 3, 4]}   # merged, secondary appended, seeds / columns / budget / methods replaced
      full: {common: [trainer.epochs=100], rows: {kd: [trainer.epochs=200]}}  # rows: some rows' sets
    init: {clf: [method=teacher]}   # runs before the rows; a row's set model.checkpoint=@init:clf gets its
                                    # run directory (kdlab.compare.inits; also a scales entry's key)
    callbacks: [{name: kdgan-grad-variance, draws: 30}]  # registered engine callbacks attached to every
                                    # row's runs, by name with their settings (kdlab.compare.analyses); a
                                    # row's own callbacks: [...] are merged over these by name, an init
                                    # entry's are its run's, a scales entry replaces the list. An analysis
                                    # among them writes metrics into each run (analysis/<name>...json) that
                                    # results.json and the report show per row and a comparison may name
                                    # as its metric (e.g. metric: adv_grad_var_log10)

A row is a packaged recipe, a YAML path, or only inline ``key=value`` sets (on top of ``student`` and
``common``; a row without a recipe is a ``distill`` row unless it sets ``method=``). Precedence, lowest
first: recipe, ``common``, ``student``, ``budget``, the row's label, the row's ``set``, seed/name,
the command line's ``key=value`` overrides (a column's sets come just before the row's, a column's
``rows`` sets just after). ``set`` entries merge into the recipe's ``objective.student``; to replace the
terms write ``objective.student={ce: {weight: 1}}``.

Everything here is checked without training: :func:`load_spec` raises
:class:`kdlab.config.ConfigError` naming the bad key or value and what is accepted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from kdlab.compare.analyses import CallbackUse, merge_callbacks, parse_callbacks
from kdlab.compare.claims import Comparison, default_comparisons, parse_comparisons
from kdlab.compare.columns import check_comparison_rows, column_slug, parse_columns
from kdlab.compare.teachers import check_row_teachers, parse_teachers
from kdlab.compare.inits import InitRun, parse_inits
from kdlab.compare.scales import apply_scale as _apply_scale, mapping as _mapping, seeds as _seeds
from kdlab.compare.scales import str_list as _str_list
from kdlab.config import ConfigError

__all__ = ["MethodRow", "CompareSpec", "load_spec", "parse_method_arg", "slugify", "find_config", "SPEC_KEYS",
           "BUDGET_KEYS", "SPECS", "DEFAULT_QUICK"]

#: packaged run recipes
RECIPES = Path(__file__).resolve().parent.parent / "recipes"
#: packaged compare specs (``kdlab compare demo``)
SPECS = RECIPES / "compare"

#: the keys a spec file may hold
SPEC_KEYS = ("name", "title", "teacher", "teacher_set", "student", "budget", "seeds", "common", "methods", "quick",
             "launcher", "primary", "secondary", "columns", "scales", "teachers", "init", "subset_seed", "callbacks")
#: the data.* keys a budget may set (how much, and which, data the student learns from)
BUDGET_KEYS = ("n_per_class", "transfer", "transfer_n", "transfer_select", "transfer_k", "transfer_channels",
               "transfer_size", "steps_per_epoch")
#: --quick for a spec without a ``quick`` section: one seed, one epoch, small validation/test splits
DEFAULT_QUICK: Dict[str, Any] = {"common": ["trainer.epochs=1", "data.val_size=1000", "data.max_test=2000",
                                            "eval.latency_iters=5"]}

_ROW_KEYS = ("label", "name", "recipe", "set", "paper", "teacher", "callbacks")
_SLUG_RE = re.compile(r"[^a-z0-9.]+")


def slugify(label: str) -> str:
    """A run-name-safe form of a row label: lower case, runs of other characters -> ``-``
    (``"CE + KD (T=4)"`` -> ``"ce-kd-t-4"``)."""
    return _SLUG_RE.sub("-", label.lower()).strip("-.") or "row"


@dataclass
class MethodRow:
    """One row of a comparison.

    Attributes:
        label: the row's name in the report (unique within a spec).
        slug: the row's part of the run names ``<name>-<slug>-s<seed>`` (unique; letters, digits, ``.-``).
        recipe: the YAML file the row starts from, or None (inline sets only).
        set: ``key=value`` overrides of this row (a column's sets first, its ``rows`` sets for this row last).
        column: the spec column this row belongs to (None without ``columns``).
        paper: the paper's value of this row, shown beside ours for context (a number; before column
            expansion also a mapping column -> number).
        seeds: the seeds of its column when that column sets them (None: the spec's seeds).
        teacher: a name of the spec's ``teachers`` this row learns from (None: the spec's teacher).
        callbacks: the registered callbacks of its runs (the spec's merged with its own; :mod:`kdlab.compare.analyses`).
    """

    label: str
    slug: str
    recipe: Optional[Path] = None
    set: List[str] = field(default_factory=list)
    column: Optional[str] = None
    paper: Any = None
    seeds: Optional[List[int]] = None  # its column's seeds (None: the spec's)
    teacher: Optional[str] = None
    callbacks: List[CallbackUse] = field(default_factory=list)


@dataclass
class CompareSpec:
    """A parsed comparison (see the module docstring for each field's meaning)."""

    name: str
    title: str
    rows: List[MethodRow]
    seeds: List[int]
    teacher: Optional[str] = None
    teacher_set: List[str] = field(default_factory=list)
    student: Dict[str, Any] = field(default_factory=dict)
    budget: Dict[str, Any] = field(default_factory=dict)
    common: List[str] = field(default_factory=list)
    quick: Optional[Dict[str, Any]] = None
    source: Optional[Path] = None  # the spec file, if any
    launcher: Optional[Dict[str, Any]] = None  # settings of --launcher submitit (checked by kdlab.compare.launch)
    comparisons: List[Comparison] = field(default_factory=list)  # declared, else the post-hoc default
    declared: bool = False  # comparisons come from primary/secondary (not the default)
    scale: Optional[str] = None  # the scales entry applied
    columns: List[str] = field(default_factory=list)
    teachers: Dict[str, List[str]] = field(default_factory=dict)  # further teachers (kdlab.compare.teachers)
    column_sets: Dict[str, List[str]] = field(default_factory=dict)  # column -> its own key=value sets
    inits: Dict[str, InitRun] = field(default_factory=dict)  # runs trained before the rows (kdlab.compare.inits)
    subset_seed: Optional[int] = None  # data.subset_seed of every run (None: each run's seed)


def find_config(arg: Union[str, Path], what: str = "recipe", packaged_dir: Path = RECIPES) -> Path:
    """A YAML path, or the packaged file ``arg`` of ``packaged_dir`` (``demo_kd`` or ``demo_kd.yaml``).

    Raises:
        ConfigError: neither exists; names ``arg`` and lists the packaged ones.
    """
    path = Path(arg)
    if path.is_file():
        return path
    name = str(arg)
    packaged = packaged_dir / (name if name.endswith(".yaml") else f"{name}.yaml")
    if packaged.is_file():
        return packaged
    names = ", ".join(sorted(p.stem for p in packaged_dir.glob("*.yaml")))
    kind = "packaged compare spec" if packaged_dir == SPECS else "packaged recipe"
    raise ConfigError(f"{what} {name!r} is neither a file nor a {kind}; accepted {kind}s: {names}")


def _row(raw: Any, i: int) -> MethodRow:
    if isinstance(raw, str):  # a bare recipe name
        raw = {"recipe": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"methods[{i}] must be a mapping with keys {', '.join(_ROW_KEYS)}; got {raw!r}")
    unknown = sorted(set(raw) - set(_ROW_KEYS))
    if unknown:
        raise ConfigError(f"methods[{i}]: unknown key {unknown[0]!r}; accepted: {', '.join(_ROW_KEYS)}")
    recipe = find_config(raw["recipe"], what=f"methods[{i}].recipe") if raw.get("recipe") else None
    sets = _str_list(raw.get("set"), f"methods[{i}].set")
    if recipe is None and not sets:
        raise ConfigError(f"methods[{i}] needs a recipe or key=value sets (e.g. set: [objective.student.kd.weight=1])")
    label = str(raw.get("label") or (recipe.stem if recipe else " ".join(sets)))
    slug = str(raw.get("name") or slugify(label))
    if slugify(slug) != slug.lower() or not slug:
        raise ConfigError(f"methods[{i}].name = {slug!r}: use lower-case letters, digits, '.' or '-'")
    paper = raw.get("paper")
    values = paper.values() if isinstance(paper, dict) else [paper]
    if not all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"methods[{i}].paper = {paper!r}: accepted: the paper's number, or a mapping column -> number")
    return MethodRow(label=label, slug=slug, recipe=recipe, set=sets, paper=paper,
                     teacher=str(raw["teacher"]) if raw.get("teacher") is not None else None,
                     callbacks=parse_callbacks(raw.get("callbacks"), f"methods[{i}].callbacks", complete=False))


def parse_method_arg(text: str) -> MethodRow:
    """A ``--method`` argument: ``LABEL=SOURCE``, SOURCE being a recipe name / YAML path and/or
    space-separated ``key=value`` sets, e.g. ``"KD T8=demo_kd objective.student.kd.temperature=8"`` or
    ``"KD+AT=method=distill objective.student.kd.weight=1 objective.student.attention.weight=1000"``. The label
    ends at the first ``=`` (so it holds none).

    Raises:
        ConfigError: no ``=``, an empty label, more than one recipe, or an unknown recipe.
    """
    label, eq, rest = text.partition("=")
    label = label.strip()
    if not eq or not label:
        raise ConfigError(f"--method {text!r}: expected LABEL=SOURCE, e.g. 'kd=demo_kd' or "
                          f"'kd-t8=demo_kd objective.student.kd.temperature=8'")
    words = rest.split()
    recipes = [w for w in words if "=" not in w]
    if len(recipes) > 1:
        raise ConfigError(f"--method {text!r} names several recipes ({', '.join(recipes)}); give one")
    return _row({"label": label, "recipe": recipes[0] if recipes else None,
                 "set": [w for w in words if "=" in w]}, 0)


def _read_yaml(path: Path) -> Dict[str, Any]:
    import yaml

    from kdlab.config import yaml_where

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"compare spec {str(path)!r} is not UTF-8 text (a binary file?); accepted: a YAML file with "
                          f"keys {', '.join(SPEC_KEYS)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"compare spec {str(path)!r}, {yaml_where(exc, text)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"compare spec {str(path)!r} must hold a mapping with keys {', '.join(SPEC_KEYS)}")
    return data


def load_spec(spec: Union[None, str, Path, Dict[str, Any]] = None, *, methods: Sequence[str] = (),
              teacher: Optional[str] = None, seeds: Union[None, str, Sequence[int]] = None,
              name: Optional[str] = None, quick: bool = False, scale: Optional[str] = None,
              require_primary: bool = False) -> CompareSpec:
    """Parse a spec (a YAML path, a packaged spec/recipe name, a mapping or None) and the command
    line's additions.

    Args:
        spec: the spec; None = everything from the other arguments.
        methods: ``--method`` arguments (:func:`parse_method_arg`), appended after the spec's rows.
        teacher, seeds, name: replace the spec's values when given (``seeds`` as ``"0,1,2"`` or ints).
        quick: apply the spec's ``quick`` section (or :data:`DEFAULT_QUICK` and the first seed).
        scale: the ``scales`` entry to apply (None: the first one, if the spec has any).
        require_primary: refuse a spec without a ``primary`` comparison (``kdlab reproduce``).

    Returns:
        A :class:`CompareSpec` (rows not resolved yet: :func:`kdlab.compare.plan.plan_compare` does that).

    Raises:
        ConfigError: an unknown spec key, row key, recipe, scale, column or callback (or callback setting);
            duplicate row labels or names;
            no rows; bad seeds; a column's unknown key or row; a budget key that is not one of :data:`BUDGET_KEYS`; a comparison naming a
            missing row (:func:`kdlab.compare.claims.parse_comparisons`); no primary comparison where one
            is required; declared comparisons with fewer than 2 seeds.
    """
    source = None
    if spec is None:
        raw: Dict[str, Any] = {}
    elif isinstance(spec, dict):
        raw = dict(spec)
    else:
        source = find_config(spec, what="compare spec", packaged_dir=SPECS)
        raw = _read_yaml(source)
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"compare spec: unknown key {unknown[0]!r}; accepted: {', '.join(SPEC_KEYS)}")
    raw, scale = _apply_scale(raw, scale)
    if not isinstance(raw.get("methods") or [], list):
        raise ConfigError(f"compare spec key 'methods' = {raw['methods']!r}; accepted: a list of rows, e.g. "
                          f"[{{label: KD, recipe: demo_kd}}] or [demo_ce, demo_kd]")
    base = [_row(r, i) for i, r in enumerate(raw.get("methods") or [])] + [parse_method_arg(m) for m in methods]
    if not base:
        raise ConfigError("compare needs at least one method row: a spec with 'methods:' or --method LABEL=SOURCE")
    every = parse_callbacks(raw.get("callbacks"), "callbacks")
    for r in base:
        r.callbacks = merge_callbacks(every, r.callbacks, f"method row {r.label!r}")
    for attr in ("label", "slug"):
        seen: Dict[str, int] = {}
        for i, r in enumerate(base):
            key = getattr(r, attr).lower()
            if key in seen:
                what = "label" if attr == "label" else "name (run-name part)"
                raise ConfigError(f"method rows {seen[key]} and {i} have the same {what} {getattr(r, attr)!r}; "
                                  f"each row needs its own")
            seen[key] = i
    columns = parse_columns(raw.get("columns"), base, _str_list, _seeds, slugify)
    rows = [MethodRow(label=f"{r.label} [{name}]", slug=column_slug(r.slug, name), recipe=r.recipe,
                      set=col.set + r.set + col.rows.get(r.slug, []), column=name,
                      paper=r.paper.get(name) if isinstance(r.paper, dict) else r.paper, seeds=col.seeds,
                      teacher=r.teacher, callbacks=r.callbacks)
            for name, col in columns.items() for r in base if col.only is None or r.slug in col.only] or base
    comparisons = [c for key in ("primary", "secondary")
                   for c in parse_comparisons(raw.get(key), key, base, list(columns), column_slug)]
    declared = bool(comparisons)
    if require_primary and not any(c.kind == "primary" for c in comparisons):
        raise ConfigError(f"compare spec {raw.get('name') or source or ''!r}: no primary comparison; an experiment "
                          "declares its claims before it runs: add 'primary: [{a: ROW, b: ROW, metric: test_acc_best, "
                          "direction: greater, label: ..., paper: ...}]'")
    budget = _mapping(raw.get("budget"), "budget")
    bad = sorted(set(budget) - set(BUDGET_KEYS))
    if bad:
        raise ConfigError(f"compare spec budget: unknown key {bad[0]!r}; accepted (data.* keys): {', '.join(BUDGET_KEYS)}")
    quick_raw = _mapping(raw.get("quick"), "quick") if raw.get("quick") is not None else None
    if quick_raw is not None:
        bad = sorted(set(quick_raw) - {"common", "teacher_set", "student", "seeds"})
        if bad:
            raise ConfigError(f"compare spec quick: unknown key {bad[0]!r}; accepted: common, teacher_set, student, seeds")
    out = CompareSpec(
        name=str(name or raw.get("name") or (source.stem if source else "compare")),
        title=str(raw.get("title") or f"kdlab compare: {name or raw.get('name') or 'comparison'}"),
        rows=rows,
        seeds=_seeds(seeds if seeds is not None else raw.get("seeds", [0, 1, 2])),
        teacher=str(teacher if teacher is not None else raw["teacher"]) if (teacher or raw.get("teacher")) else None,
        teacher_set=_str_list(raw.get("teacher_set"), "teacher_set"),
        student=_mapping(raw.get("student"), "student"),
        budget=budget,
        common=_str_list(raw.get("common"), "common"),
        quick=quick_raw,
        source=source,
        launcher=raw.get("launcher"),
        comparisons=comparisons or default_comparisons(rows),
        declared=declared,
        scale=scale,
        columns=list(columns),
        teachers=parse_teachers(raw.get("teachers"), bool(teacher or raw.get("teacher"))),
        column_sets={c: col.set for c, col in columns.items()},
        inits=parse_inits(raw.get("init"), "init", _str_list),
        subset_seed=None if raw.get("subset_seed") is None else _seeds([raw["subset_seed"]], "subset_seed")[0],
    )
    check_row_teachers(base, out.teachers)
    if slugify(out.name) != out.name.lower():
        raise ConfigError(f"compare name {out.name!r}: use letters, digits, '.' or '-' (it starts every run name)")
    out = apply_quick(out) if quick else out
    if declared and len(out.seeds) < 2:
        raise ConfigError(f"seeds = {out.seeds}: the spec's declared comparisons are paired tests over seeds and need "
                          "at least 2 seeds; accepted: 2 or more seeds (e.g. --seeds 0,1,2,3,4)")
    check_comparison_rows(out.comparisons if declared else [], out.rows, out.seeds)
    return out


def apply_quick(spec: CompareSpec) -> CompareSpec:
    """The ``--quick`` variant of ``spec``: its ``quick`` section (lists appended, ``student`` deep-merged,
    ``seeds`` replaced) or, without one, :data:`DEFAULT_QUICK` and the first seed only."""
    from omegaconf import OmegaConf

    q = spec.quick if spec.quick is not None else DEFAULT_QUICK
    student = OmegaConf.to_container(OmegaConf.merge(spec.student, q.get("student") or {}))
    return CompareSpec(
        name=spec.name, title=spec.title + " (quick)", rows=spec.rows,
        seeds=_seeds(q["seeds"], "quick.seeds") if "seeds" in q else spec.seeds[:1],
        teacher=spec.teacher, teacher_set=spec.teacher_set + _str_list(q.get("teacher_set"), "quick.teacher_set"),
        student=student, budget=spec.budget, common=spec.common + _str_list(q.get("common"), "quick.common"),
        quick=spec.quick, source=spec.source, launcher=spec.launcher, comparisons=spec.comparisons,
        declared=spec.declared, scale=spec.scale, columns=spec.columns, teachers=spec.teachers,
        column_sets=spec.column_sets, inits=spec.inits, subset_seed=spec.subset_seed)
