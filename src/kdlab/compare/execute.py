"""Running the cells of a :class:`~kdlab.compare.plan.Plan`: reused, in this process, or on a pool.

* A cell whose run directory already holds a finished run of exactly its resolved config is reused
  (:func:`kdlab.experiments.grid.finished_run`, the grid runner's rule: ``config.yaml`` equal and
  ``summary.json`` present); a changed config trains again under the same name.
* With one job the runs train here one after the other, with their usual progress output.
* With several, they go to a pool of ``spawn`` processes (a fresh interpreter each: no forked torch or
  OpenMP state); each worker's output goes to ``<report dir>/logs/<run>.log`` and this process prints
  one line per finished run. With CUDA devices the pool has one process per device, pinned to it with
  ``CUDA_VISIBLE_DEVICES`` (so the configs do not change with the device a run lands on).
* A run that raises becomes a failed :class:`Outcome` (its message and log) and the others go on; a
  worker that dies (killed, out of memory) fails the runs it held.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from rich.console import Console
from rich.markup import escape

from kdlab.compare.plan import Cell, Plan
from kdlab.config import ConfigError
from kdlab.engine import NonFiniteLossError
from kdlab.experiments import grid
from kdlab.registry import UnknownNameError

__all__ = ["Outcome", "run_cells", "cuda_devices"]


@dataclass
class Outcome:
    """What happened to one cell.

    Attributes:
        name: the run name.
        status: ``"trained"``, ``"reused"`` or ``"failed"``.
        run_dir: the run directory (also for a failed run: it may hold a partial run).
        error: ``"<ExceptionType>: <message>"`` of a failed run.
        log: the worker's log file (pool runs), else None.
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


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# ------------------------------------------------------------------------------------ pool worker
def _init_worker(devices: Any) -> None:
    """Pool initializer: take one CUDA device id from the queue (before CUDA initialises) and pin to it."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())


def _work(sources: List[Any], overrides: List[str], log: str) -> Dict[str, Any]:
    """One run in a worker, every byte of its output (Python and C level) in ``log``; never raises."""
    t0 = time.perf_counter()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", buffering=1, encoding="utf-8") as fh:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                run = grid.run_cell(sources, overrides, Console(file=fh, width=120))
            return {"ok": True, "run": str(run), "seconds": time.perf_counter() - t0}
        except Exception as exc:  # the row reports it; the pool goes on
            traceback.print_exc(file=fh)
            return {"ok": False, "error": _error_text(exc), "seconds": time.perf_counter() - t0}
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
            acc = f"test acc {grid.read_summary(o.run_dir)['test_acc_best']:.2f}%"
        except Exception:  # a summary without the key (another kind of run): just say it finished
            acc = "finished"
        console.print(f"[{k}/{n}] [bold]{o.name}[/]: {o.status} in {o.seconds:.1f} s, {acc}")
    else:
        where = f" (log: {o.log})" if o.log else ""
        console.print(f"[{k}/{n}] [bold red]{o.name}: failed[/]: {escape(o.error or '')}{escape(where)}")


def run_cells(plan: Plan, jobs: int = 1, gpus: int = 0, console: Optional[Console] = None) -> Dict[str, Outcome]:
    """Run (or reuse) every student cell of ``plan``; the teacher must be finished already.

    Args:
        plan: from :func:`kdlab.compare.plan.plan_compare`.
        jobs: processes on CPU; 1 = train here, one run after the other.
        gpus: CUDA devices (from :func:`cuda_devices`): with ``gpus > 0`` the pool has
            ``min(jobs, gpus)`` processes, one per device.
        console: where progress lines go (default: stderr).

    Returns:
        run name -> :class:`Outcome`, in the plan's order.
    """
    console = console or Console(stderr=True)
    outcomes: Dict[str, Outcome] = {}
    pending: List[Cell] = []
    for cell in plan.cells:
        if grid.finished_run(cell.cfg) is not None:
            outcomes[cell.cfg.name] = Outcome(cell.cfg.name, "reused", cell.run_dir)
        else:
            pending.append(cell)
            outcomes[cell.cfg.name] = Outcome(cell.cfg.name, "pending", cell.run_dir)
    n, done = len(pending), 0
    if any(o.status == "reused" for o in outcomes.values()):
        console.print(f"{len(outcomes) - n} of {len(outcomes)} runs reused (finished runs of the same config)")
    workers = min(jobs, gpus) if gpus else jobs
    if workers <= 1 or n <= 1 and not gpus:
        for cell in pending:
            t0 = time.perf_counter()
            try:
                grid.run_cell(cell.sources, cell.overrides, console)
                o = Outcome(cell.cfg.name, "trained", cell.run_dir, seconds=time.perf_counter() - t0)
            except Exception as exc:  # one failed row; the others still run
                if not isinstance(exc, ROW_ERRORS):  # a bug: show where; a diverged run or bad input: its line says it
                    console.print(escape(traceback.format_exc()))
                o = Outcome(cell.cfg.name, "failed", cell.run_dir, error=_error_text(exc),
                            seconds=time.perf_counter() - t0)
            outcomes[o.name] = o
            done += 1
            _line(console, done, n, o)
        return outcomes

    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")
    devices = None
    if gpus:
        devices = ctx.Queue()
        for i in range(workers):
            devices.put(i)
    logs = plan.out / "logs"
    console.print(f"{n} runs on {workers} processes"
                  + (", one per CUDA device" if gpus else f", {plan.threads or 'default'} CPU thread(s) each")
                  + f"; logs in {logs}/")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(devices,))
    try:
        futures = {pool.submit(_work, c.sources, c.overrides, str(logs / f"{c.cfg.name}.log")): c for c in pending}
        for fut in as_completed(futures):
            cell = futures[fut]
            log = logs / f"{cell.cfg.name}.log"
            try:
                res = fut.result()
            except Exception as exc:  # the worker died (BrokenProcessPool) or could not unpickle
                res = {"ok": False, "error": f"worker process failed: {_error_text(exc)}", "seconds": 0.0}
            o = Outcome(cell.cfg.name, "trained" if res["ok"] else "failed", cell.run_dir, error=res.get("error"),
                        log=log, seconds=res["seconds"])
            outcomes[o.name] = o
            done += 1
            _line(console, done, n, o)
    except BaseException:  # Ctrl-C: do not start the queued runs (the running ones end with their workers)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return outcomes
