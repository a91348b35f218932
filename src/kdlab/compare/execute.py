"""Running the cells of a :class:`~kdlab.compare.plan.Plan`: reused, in this process, or on a pool.

* A cell whose run directory already holds a finished run of exactly its resolved config is reused
  (:func:`kdlab.experiments.grid.finished_run`, the grid runner's rule: ``config.yaml`` equal and
  ``summary.json`` present, and every file its callbacks write); a changed config trains again under the
  same name. A cell's registered callbacks (:mod:`kdlab.compare.analyses`) go with it to where it trains.
* With one job the runs train here one after the other, with their usual progress output.
* With several, they go to a pool of ``spawn`` processes (a fresh interpreter each: no forked torch or
  OpenMP state); each worker's output goes to ``<report dir>/logs/<run>.log`` (moved into the run's directory, ``compare.log``,
  when the report is written; a failed run's stays) and this process prints
  one line per finished run. With CUDA devices the pool has one process per device, pinned to it with
  ``CUDA_VISIBLE_DEVICES`` (so the configs do not change with the device a run lands on).
* With ``launcher`` settings (``--launcher submitit``), each run is one submitit job
  (:mod:`kdlab.compare.launch`) that calls :func:`work` as a pool worker does; the outcomes and logs
  are the pool's.
* A run that raises becomes a failed :class:`Outcome` (its message and log) and the others go on; a
  worker that dies (killed, out of memory) fails the runs it held.
* The teacher and init runs every row depends on (:func:`run_first`) train before the rows: on the pool too,
  in waves of runs that do not depend on each other, and a failed one stops the comparison.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rich.console import Console
from rich.markup import escape

from kdlab.compare.plan import Cell, Plan
from kdlab.config import ConfigError, to_yaml
from kdlab.engine import NonFiniteLossError
from kdlab.experiments import grid
from kdlab.registry import UnknownNameError

__all__ = ["Outcome", "run_cells", "run_first", "first_waves", "keep_log", "InitRunError", "cuda_devices", "work",
           "error_text"]


@dataclass
class Outcome:
    """What happened to one cell.

    Attributes:
        name: the run name.
        status: ``"trained"``, ``"reused"`` or ``"failed"``.
        run_dir: the run directory (also for a failed run: it may hold a partial run).
        error: ``"<ExceptionType>: <message>"`` of a failed run.
        log: the worker's or job's log file (pool runs, submitted runs), else None.
        seconds: wall time spent on the cell here (0 for a reused run).
    """

    name: str
    status: str
    run_dir: Path
    error: Optional[str] = None
    log: Optional[Path] = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def cuda_devices(cells: Sequence[Cell]) -> int:
    """CUDA devices to spread the runs over: ``torch.cuda.device_count()`` when some run asks for a GPU
    (``trainer.accelerator`` cuda / gpu / auto) with one device per run, else 0."""
    wants = any(c.cfg.trainer.accelerator in ("cuda", "gpu", "auto") and c.cfg.trainer.devices in (1, "1")
                for c in cells)
    if not wants:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def error_text(exc: BaseException) -> str:
    """``"<ExceptionType>: <first line of the message>"``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# ------------------------------------------------------------------------------------ pool worker
def _init_worker(devices: Any, threads: Optional[int] = None) -> None:
    """Pool initializer: take one CUDA device id from the queue (before CUDA initialises) and pin to it;
    ``threads``: torch's CPU threads for runs that do not set ``trainer.threads`` (the pool's share of the cores)."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
    if threads:
        import torch

        torch.set_num_threads(threads)


def _stream_handlers() -> List[logging.StreamHandler]:
    """The console handlers of every logger of this process (e.g. Lightning's, made on import with the
    ``sys.stderr`` of that moment)."""
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    return [h for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextlib.contextmanager
def _logging_to(stream: Any):
    """Console log records go to ``stream`` while the block runs: a handler made during an earlier cell of this
    worker would otherwise still write to that cell's log file, closed by now."""
    before = {h: h.stream for h in _stream_handlers()}
    for h in before:
        h.setStream(stream)
    try:
        yield
    finally:
        for h in _stream_handlers():  # those made inside the block too: back to the process's own stderr
            h.setStream(before.get(h, sys.__stderr__))


def work(sources: List[Any], overrides: List[str], log: str, append: bool = False, expected: Optional[str] = None,
         **cell: Any) -> Dict[str, Any]:
    """One run (:func:`grid.run_cell`) in a worker process or a submitted job, every byte of its output
    (Python and C level) in ``log``; never raises an ``Exception`` (only what stops the process itself:
    a scheduler's requeue exits through it).

    Args:
        sources, overrides: the cell.
        log: the log file; ``append``: add to it (a resubmitted job) instead of starting it anew.
        expected: the config YAML planned for this cell; a job that resolves another one fails (no training).
        cell: ``callbacks`` / ``needs`` of :func:`grid.run_cell`.

    Returns:
        ``{"ok": True, "run": <run dir>, "seconds": s}`` or ``{"ok": False, "error": text, "seconds": s}``.
    """
    t0 = time.perf_counter()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a" if append else "w", buffering=1, encoding="utf-8") as fh:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh), _logging_to(fh):
                if expected is not None and to_yaml(grid.resolve(sources, overrides)) != expected:
                    raise ConfigError("this job resolved another config than the one planned for its run (is "
                                      "kdlab, a recipe or a plugin different where it runs?); nothing was trained")
                run = grid.run_cell(sources, overrides, Console(file=fh, width=120), **cell)
            return {"ok": True, "run": str(run), "seconds": time.perf_counter() - t0}
        except Exception as exc:  # the row reports it; the pool goes on
            traceback.print_exc(file=fh)
            return {"ok": False, "error": error_text(exc), "seconds": time.perf_counter() - t0}
        finally:
            fh.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


# ------------------------------------------------------------------------------------ driver
#: failures of a row that its one line explains (a diverged run, bad input or data): no traceback
ROW_ERRORS = (NonFiniteLossError, ConfigError, UnknownNameError, ValueError, OSError)


def _line(console: Console, k: int, n: int, o: Outcome) -> None:
    if o.ok:
        try:
            s = grid.read_summary(o.run_dir)
            fid = (s.get("translation") or s.get("generative") or {}).get("fid")
            acc = f"FID {fid:.2f}" if s.get("kind") == "generator" else f"test acc {s['test_acc_best']:.2f}%"
        except Exception:  # a summary without the key (no extractor, another kind of run): just say it finished
            acc = "finished"
        console.print(f"[{k}/{n}] [bold]{o.name}[/]: {o.status} in {o.seconds:.1f} s, {acc}")
    else:
        where = f" (log: {o.log})" if o.log else ""
        console.print(f"[{k}/{n}] [bold red]{o.name}: failed[/]: {escape(o.error or '')}{escape(where)}")


def run_cells(plan: Plan, jobs: int = 1, gpus: int = 0, console: Optional[Console] = None,
              launcher: Any = None, cells: Optional[Sequence[Cell]] = None, threads: Optional[int] = None,
              ) -> Dict[str, Outcome]:
    """Run (or reuse) every student cell of ``plan`` (or ``cells``); the teacher must be finished already.

    Args:
        plan: from :func:`kdlab.compare.plan.plan_compare`.
        jobs: processes on CPU; 1 = train here, one run after the other.
        gpus: CUDA devices (from :func:`cuda_devices`): with ``gpus > 0`` the pool has
            ``min(jobs, gpus)`` processes, one per device.
        console: where progress lines go (default: stderr).
        launcher: :class:`kdlab.compare.launch.SubmititSettings` to submit each run as a job
            (``jobs``/``gpus`` are then unused); None = this machine.
        cells: the cells to run instead of the plan's student cells (e.g. a wave of :func:`run_first`).
        threads: torch's CPU threads in each pool worker, for runs whose config sets none.

    Returns:
        run name -> :class:`Outcome`, in the plan's order.
    """
    console = console or Console(stderr=True)
    outcomes: Dict[str, Outcome] = {}
    pending: List[Cell] = []
    for cell in plan.cells if cells is None else cells:
        if cell.finished():
            outcomes[cell.cfg.name] = Outcome(cell.cfg.name, "reused", cell.run_dir)
        else:
            pending.append(cell)
            outcomes[cell.cfg.name] = Outcome(cell.cfg.name, "pending", cell.run_dir)
    n, done = len(pending), [0]
    if any(o.status == "reused" for o in outcomes.values()):
        console.print(f"{len(outcomes) - n} of {len(outcomes)} runs reused (finished runs of the same config)")
    logs = plan.out / "logs"
    by_name = {c.cfg.name: c for c in pending}

    def finished(name: str, res: Dict[str, Any], *_: Any) -> None:  # a pool worker's or a job's result
        cell = by_name[name]
        o = Outcome(name, "trained" if res["ok"] else "failed", cell.run_dir, error=res.get("error"),
                    log=logs / f"{name}.log", seconds=res["seconds"])
        outcomes[name] = o
        done[0] += 1
        _line(console, done[0], n, o)

    if launcher is not None:
        if pending:
            from kdlab.compare.launch import CellJob, job_folder, submit_cells

            folder = job_folder(launcher, plan.out)
            console.print(f"{n} runs submitted as submitit jobs (executor {launcher.executor}); logs in {logs}/, "
                          f"submitit's files in {folder}/")
            submit_cells([CellJob(c.sources, c.overrides, str(logs / f"{c.cfg.name}.log"), to_yaml(c.cfg), **c.run_kwargs)
                          for c in pending], list(by_name), launcher, folder, console, finished)
        return outcomes
    workers = min(jobs, gpus) if gpus else jobs
    if workers <= 1 or n <= 1 and not gpus:
        for cell in pending:
            t0 = time.perf_counter()
            try:
                grid.run_cell(cell.sources, cell.overrides, console, **cell.run_kwargs)
                o = Outcome(cell.cfg.name, "trained", cell.run_dir, seconds=time.perf_counter() - t0)
            except Exception as exc:  # one failed row; the others still run
                if not isinstance(exc, ROW_ERRORS):  # a bug: show where; a diverged run or bad input: its line says it
                    console.print(escape(traceback.format_exc()))
                o = Outcome(cell.cfg.name, "failed", cell.run_dir, error=error_text(exc),
                            seconds=time.perf_counter() - t0)
            outcomes[o.name] = o
            done[0] += 1
            _line(console, done[0], n, o)
        return outcomes

    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")
    devices = None
    if gpus:
        devices = ctx.Queue()
        for i in range(workers):
            devices.put(i)
    console.print(f"{n} runs on {workers} processes"
                  + (", one per CUDA device" if gpus else f", {plan.threads or 'default'} CPU thread(s) each")
                  + f"; logs in {logs}/")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(devices, threads))
    try:
        futures = {pool.submit(work, c.sources, c.overrides, str(logs / f"{c.cfg.name}.log"), **c.run_kwargs): c
                   for c in pending}
        for fut in as_completed(futures):
            try:
                res = fut.result()
            except Exception as exc:  # the worker died (BrokenProcessPool) or could not unpickle
                res = {"ok": False, "error": f"worker process failed: {error_text(exc)}", "seconds": 0.0}
            finished(futures[fut].cfg.name, res)
    except BaseException:  # Ctrl-C: do not start the queued runs (the running ones end with their workers)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return outcomes


# ------------------------------------------------------------------------------------ teacher and init runs
class InitRunError(RuntimeError):
    """A teacher or init run that the rows depend on failed on the pool (names the run, its error and log)."""


def keep_log(log: Any, run_dir: Any, status: str) -> Optional[str]:
    """Where a run's worker log is kept: a finished run's moves into its own directory (``compare.log``), so the
    report directory (committed as results/) holds the logs of failed runs only; a failed run's stays there."""
    import shutil

    if not log or status == "failed" or not Path(log).is_file() or not Path(run_dir).is_dir():
        return None if not log else str(log)
    dest = Path(run_dir) / "compare.log"
    shutil.move(str(log), dest)  # across file systems too (a results folder apart from the runs)
    return str(dest)


def _strings(x: Any) -> List[str]:
    """Every string in ``x`` (nested mappings and lists; a ``key=value`` override gives its value too)."""
    if isinstance(x, str):
        return [x, x.split("=", 1)[1]] if "=" in x else [x]
    if isinstance(x, Path):
        return [str(x)]
    items = x.values() if hasattr(x, "values") and hasattr(x, "keys") else x if isinstance(x, (list, tuple)) else []
    return [s for v in items for s in _strings(v)]


def first_waves(teachers: Sequence[Cell], inits: Sequence[Cell]) -> List[List[Cell]]:
    """The teacher and init runs in waves whose runs may train at the same time: the teachers first (any init
    may read them), then each init one wave after the last of the runs whose run directory (or a file in it)
    its sources or overrides name (``@init:`` references are resolved to such paths by the plan).

    ``inits`` must list a run after those it names (the plan's first-use order does).
    """
    placed: List[Tuple[str, int]] = []  # (run directory, wave) of every run placed so far
    waves: List[List[Cell]] = []
    for i, cell in enumerate(list(teachers) + list(inits)):
        texts = _strings(cell.overrides) + _strings(cell.sources)
        deps = [lv for rd, lv in placed if any(t == rd or t.startswith(rd + os.sep) for t in texts)]
        lv = max(max(deps, default=-1) + 1, 1 if teachers and i >= len(teachers) else 0)
        placed.append((str(cell.run_dir), lv))
        waves += [[] for _ in range(lv + 1 - len(waves))]
        waves[lv].append(cell)
    return [w for w in waves if w]


def run_first(plan: Plan, jobs: int = 1, gpus: int = 0, console: Optional[Console] = None,
              threads: Optional[int] = None) -> None:
    """Train (or reuse) the teacher and init runs every row depends on: here, one after the other, with one job;
    on the pool of :func:`run_cells`, wave by wave (:func:`first_waves`), with several (``threads``: torch's
    CPU threads of each worker, for runs that set none; their configs are left as planned, so a finished run is
    reused whatever the number of jobs). A finished pool run's log moves into its directory.

    Raises:
        InitRunError: a run failed on the pool (names it, its error and its log; the later waves do not start).
        Exception: with one job, whatever the failed run raised.
    """
    console = console or Console(stderr=True)
    first = plan.teacher_cells + plan.inits
    workers = min(jobs, gpus) if gpus else jobs
    if workers <= 1:
        for cell in first:
            grid.run_cell(cell.sources, cell.overrides, console, **cell.run_kwargs)
        return
    for wave in first_waves(plan.teacher_cells, plan.inits):
        outcomes = run_cells(plan, jobs, gpus, console, cells=wave, threads=threads)
        for o in outcomes.values():
            keep_log(o.log, o.run_dir, o.status)
        failed = [o for o in outcomes.values() if not o.ok]
        if failed:
            o = failed[0]
            raise InitRunError(f"run {o.name!r}, which the rows depend on, failed: {o.error}"
                               + (f" (log: {o.log})" if o.log else "")
                               + (f"; {len(failed) - 1} more failed" if len(failed) > 1 else ""))
