"""``kdlab compare``: several distillation methods on equal terms, N seeds each, one report.

Given a data set, a teacher (a run directory, or a recipe that is trained once), a student
architecture, a data budget and a list of method rows (packaged recipes, YAML files or inline
``key=value`` sets), :func:`run_compare` runs every row with every seed and writes
``<out>/<name>/report.md`` (:mod:`kdlab.compare.report`).

* :mod:`kdlab.compare.spec`: the spec file and the command line's rows (``--method LABEL=SOURCE``);
* :mod:`kdlab.compare.plan`: every run's config resolved and checked before anything trains;
* :mod:`kdlab.compare.execute`: finished runs reused, interrupted ones resumed, the others trained here
  or on a process pool (``--jobs N``), a failing run reported in its row;
* :mod:`kdlab.compare.launch`: or each run one job of a scheduler through submitit (``--launcher submitit``);
* :mod:`kdlab.compare.analyses`: registered engine callbacks a spec attaches to its runs, and the metrics
  they write;
* :mod:`kdlab.compare.claims`: the comparisons a spec declares (primary: Holm-adjusted, with a verdict;
  secondary), else every row against the first (post hoc), and their statistics;
* :mod:`kdlab.compare.report`: results.json (every number), environment.json, plots, configs;
  :mod:`kdlab.compare.render`: report.md rendered from results.json alone.

``kdlab demo`` is :func:`run_compare` on the packaged spec ``recipes/compare/demo.yaml``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from rich.console import Console

from kdlab.callable_module import make_callable

from kdlab.compare.clock import InvocationClock
from kdlab.compare.execute import Outcome, cuda_devices, run_cells, run_first
from kdlab.compare.plan import Plan, plan_compare, set_threads, worker_threads
from kdlab.compare.report import write_compare_report
from kdlab.compare.spec import CompareSpec, load_spec, parse_method_arg

__all__ = ["compare", "run_compare", "load_spec", "parse_method_arg", "plan_compare", "CompareSpec", "Plan", "Outcome",
           "CompareResult"]


@dataclass
class CompareResult:
    """What :func:`run_compare` did: the report's path and run name -> :class:`Outcome`."""

    report: Path
    outcomes: Dict[str, Outcome]

    @property
    def failed(self) -> int:
        """The number of failed runs."""
        return sum(not o.ok for o in self.outcomes.values())


def run_compare(spec: CompareSpec, out_dir: Path = Path("runs"), extra: Sequence[str] = (),
                jobs: Optional[int] = None, console: Optional[Console] = None, launcher: str = "local",
                launcher_options: Optional[Mapping[str, Any]] = None, report_dir: Optional[Path] = None) -> CompareResult:
    """Check every run, train the teacher (if the spec names a recipe), run or reuse every row x seed,
    write the report.

    Args:
        spec: from :func:`load_spec`.
        out_dir: parent of the run directories (``<out_dir>/<name>-<row>-s<seed>``) and of the report
            directory ``<out_dir>/<name>``.
        extra: ``key=value`` overrides of every run, the teacher included (applied last).
        jobs: parallel student runs; None = one per CUDA device when the runs ask for CUDA, else 1.
            On CPU each of ``jobs > 1`` runs gets ``trainer.threads = cores // jobs``.
        console: progress output (default: stderr).
        launcher: ``local`` (this machine: ``jobs``) or ``submitit`` (each run, the teacher's too, one job of
            a scheduler: :mod:`kdlab.compare.launch`, settings from ``spec.launcher`` and ``launcher_options``).
        launcher_options: the command line's launcher settings (keys of
            :data:`kdlab.compare.launch.LAUNCHER_KEYS`; None values unset), over the spec's.
        report_dir: where the report goes (default ``<out_dir>/<name>``).

    Returns:
        :class:`CompareResult` (report path, outcomes); a failed run does not raise.

    Raises:
        kdlab.config.ConfigError: any invalid row, budget, teacher or launcher setting, before anything
            trains or is submitted.
        Whatever training the teacher raises (every row depends on it); ChildProcessError: the teacher's
            submitted job failed.
    """
    from kdlab.compare import launch
    from kdlab.config import ConfigError

    t0 = time.perf_counter()
    console = console or Console(stderr=True)
    out_dir = Path(out_dir)
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs = {jobs}: accepted: an integer >= 1")
    settings = launch.launcher_settings(launcher, spec.launcher, launcher_options)
    if settings is not None and jobs is not None:
        raise ConfigError(f"--jobs = {jobs} sets the local launcher's processes; accepted with --launcher submitit: "
                          f"no --jobs (launcher.max_parallel sets how many jobs run at once)")
    plan = plan_compare(spec, out_dir, extra, report_dir=report_dir)  # checks everything; threads are decided below
    gpus = cuda_devices(plan.cells)
    cores = os.cpu_count() or 1
    if settings is not None:  # refused here, before the clock writes anything (below)
        launch.check_cells([c.cfg for c in plan.teacher_cells + plan.inits + plan.cells], settings)
    elif jobs is not None and jobs > max(cores, gpus):
        # each job is a process with its own copy of the data: more than the cores (or GPUs) only slows
        raise ConfigError(f"--jobs = {jobs}: accepted: an integer from 1 to {max(cores, gpus)} "
                          f"(this machine has {cores} CPU cores and {gpus} CUDA devices for these runs)")
    with InvocationClock(out_dir, spec.name, t0) as clock:  # an interrupted invocation's time counts in the next
        if settings is not None:
            return _run_submitted(plan, settings, console, clock)
        return _run_local(plan, jobs if jobs is not None else max(1, gpus), gpus, console, clock)


def _run_local(plan: Plan, jobs: int, gpus: int, console: Console, clock: InvocationClock) -> CompareResult:
    """:func:`run_compare` on this machine: ``jobs`` processes, over ``gpus`` CUDA devices when there are any."""
    if jobs > 1 and not gpus:  # each CPU run gets its share of the cores (recorded in its config)
        set_threads(plan, worker_threads(jobs))
    run_first(plan, jobs=jobs, gpus=gpus, console=console, threads=plan.threads)  # every row depends on these
    outcomes = run_cells(plan, jobs=jobs, gpus=gpus, console=console)
    return _report(plan, outcomes, clock, jobs, gpus, {"name": "local"})


def _run_submitted(plan: Plan, settings: Any, console: Console, clock: InvocationClock) -> CompareResult:
    """:func:`run_compare` with ``--launcher submitit``: the teacher's job, then one job per student run."""
    from dataclasses import asdict

    from kdlab.compare import launch
    from kdlab.experiments import grid

    first = plan.teacher_cells + plan.inits  # every row depends on these (run_compare checked every cell)
    set_threads(plan, settings.cpus_per_run)  # each CPU run gets its job's cores (recorded in its config)
    if first:
        folder = launch.job_folder(settings, plan.out)
        with grid.launched_by(launch.cell_launcher(settings, folder, plan.out / "logs", console)):
            for cell in first:
                grid.run_cell(cell.sources, cell.overrides, console, **cell.run_kwargs)
    outcomes = run_cells(plan, console=console, launcher=settings)
    return _report(plan, outcomes, clock, launch.max_parallel(settings, len(plan.cells)), settings.gpus_per_run,
                   {"name": "submitit", **asdict(settings)})


def _report(plan: Plan, outcomes: Dict[str, Outcome], clock: InvocationClock, jobs: int, gpus: int,
            launcher: Dict[str, Any]) -> CompareResult:
    """The report of a finished invocation, with how it ran and its wall time (earlier interrupted ones included)."""
    info = {"jobs": jobs, "gpus": gpus, "threads": plan.threads, "launcher": launcher, **clock.finish()}
    return CompareResult(write_compare_report(plan, outcomes, info), outcomes)


def compare(*runs: Any, spec: Any = None, out: Any = "runs/compare", title: str = "kdlab comparison",
            methods: Sequence[str] = (), teacher: Optional[str] = None, seeds: Any = None, quick: bool = False,
            overrides: Sequence[str] = (), jobs: Optional[int] = None, launcher: str = "local",
            launcher_options: Optional[Mapping[str, Any]] = None) -> Path:
    """``kdlab.compare(...)``: compare runs. Given finished runs (:class:`kdlab.api.Run` s or run directories): their side-by-side report
    (``kdlab report RUN RUN --out``, :func:`kdlab.report.compare_runs`). Else a comparison spec
    (``kdlab compare``: :func:`kdlab.compare.load_spec` + :func:`kdlab.compare.run_compare`, runs trained
    under ``out``'s parent; ``launcher="submitit"`` submits them: :mod:`kdlab.compare.launch`). Returns the
    report's path."""
    if runs:
        from kdlab.report import compare_runs

        return compare_runs([Path(getattr(r, "path", r)) for r in runs], Path(out), title=title)
    spec_ = load_spec(spec, methods=methods, teacher=teacher, seeds=seeds, name=Path(out).name, quick=quick)
    return Path(run_compare(spec_, Path(out).parent, list(overrides), jobs=jobs, launcher=launcher,
                            launcher_options=launcher_options).report)


make_callable(__name__, compare)  # kdlab.compare(...) is this function
