"""Experiments as declarative compare specs: ``recipes/experiments/<name>.yaml``, run by ``kdlab reproduce NAME``.

Each packaged spec (the form of :mod:`kdlab.compare.spec`, with ``primary`` comparisons required and a
``scales`` entry per scale) registers as an experiment under its file name. :func:`run_spec_experiment`
trains its teacher and every row x column x seed under ``<out_dir>/<name>-<scale>/`` (finished runs of
the same config are reused) and writes the report to ``<results>/<name>/<scale>/``: report.md,
results.json (the marker that folder belongs to this experiment), environment.json, plots, configs.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kdlab.experiments import EXPERIMENTS
from kdlab.experiments.grid import RECIPES

__all__ = ["SPEC_DIR", "run_spec_experiment", "row_configs"]

#: the packaged experiment specs
SPEC_DIR = RECIPES / "experiments"


def run_spec_experiment(spec: Path, out_dir: Path, scale: str, seeds: Optional[List[int]] = None,
                        overrides: Sequence[str] = (), results: Optional[Path] = None, jobs: Optional[int] = None,
                        console: Any = None, launcher: str = "local", launcher_options: Any = None) -> Path:
    """Run the experiment spec ``spec`` at ``scale``; returns ``<results>/<name>/<scale>/report.md``.

    Args:
        spec: the spec file.
        out_dir: parent of the run directories (``<out_dir>/<name>-<scale>/<name>-<row>-s<seed>``).
        scale: an entry of the spec's ``scales``.
        seeds: replace the scale's seeds (at least 2: the comparisons are paired tests).
        overrides: ``key=value`` of every run, applied last.
        results: the results root (default ``out_dir``); the report goes to ``<results>/<name>/<scale>/``.
        jobs: parallel runs (:func:`kdlab.compare.run_compare`).
        launcher, launcher_options: ``submitit`` submits each run as a job (:mod:`kdlab.compare.launch`).

    Raises:
        kdlab.config.ConfigError: before anything trains: a bad spec or scale, no primary comparison,
            fewer than 2 seeds, a report folder inside another experiment's results, any bad row.
    """
    from kdlab.compare import load_spec, run_compare

    sp = load_spec(spec, seeds=seeds, scale=scale, require_primary=True)
    report_dir = Path(results if results is not None else out_dir) / sp.name / str(sp.scale)
    return run_compare(sp, Path(out_dir) / f"{sp.name}-{sp.scale}", overrides, jobs=jobs, console=console,
                       launcher=launcher, launcher_options=launcher_options, report_dir=report_dir).report


def _register() -> None:
    for path in sorted(SPEC_DIR.glob("*.yaml")):
        head = path.read_text(encoding="utf-8").split("\n", 1)[0].lstrip("# ")
        fn = functools.partial(run_spec_experiment, path)
        fn.spec_path = path  # type: ignore[attr-defined]  # kdlab reproduce passes --out to these
        EXPERIMENTS.register(path.stem, help=head)(fn)


_register()


def row_configs(name: str, scale: str, column: Optional[str] = None) -> Dict[str, Any]:
    """Each row's resolved run config (seed 0) in one column of a packaged experiment spec, as
    ``kdlab reproduce NAME --scale SCALE`` runs it; nothing is trained or written (benchmarks and tests
    take the rows' terms from here).

    Args:
        name: a spec of :data:`SPEC_DIR` (e.g. ``"loss-families"``).
        scale: an entry of its ``scales``.
        column: one of its columns at that scale (None: a spec without columns).

    Returns:
        Row name (the spec's ``name:`` of the row) -> omegaconf ``DictConfig``, in the spec's row order.

    Raises:
        kdlab.config.ConfigError: an unknown spec, scale or column, or any error of :func:`load_spec`
            and :func:`kdlab.compare.plan.plan_compare`.
    """
    import tempfile

    from kdlab.compare import load_spec
    from kdlab.compare.plan import plan_compare
    from kdlab.compare.spec import find_config
    from kdlab.config import ConfigError

    spec = load_spec(find_config(name, what="experiment spec", packaged_dir=SPEC_DIR), scale=scale, seeds=[0, 1])
    if (column is None) != (not spec.columns) or (column is not None and column not in spec.columns):
        raise ConfigError(f"column {column!r}: experiment {name!r} at scale {spec.scale!r} has columns "
                          f"{', '.join(spec.columns) or 'none (give no column)'}")
    with tempfile.TemporaryDirectory() as tmp:
        plan = plan_compare(spec, Path(tmp))
    cut = len(column) + 1 if column else 0
    return {c.row.slug[:len(c.row.slug) - cut]: c.cfg for c in plan.cells if c.seed == 0 and c.row.column == column}
