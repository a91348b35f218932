"""Runs submitted to a scheduler through submitit (``--launcher submitit``), besides the local process pool.

Each cell (one run) is one submitit job that calls what a pool worker calls
(:func:`kdlab.compare.execute.work`: :func:`kdlab.experiments.grid.run_cell` with its output in
``<report dir>/logs/<run>.log``), so a submitted run is the same run: the job resolves the cell's config
from the same sources and overrides, refuses to train if it differs from the one planned here, and
writes the same run directory. This process submits the jobs (at most ``max_parallel`` at a time),
prints one line per finished run and collects the outcomes as the pool does, so the report and
``results.json`` are those of a local comparison.

Preemption and time-outs: submitit sends the job a signal before the scheduler kills it; the job's
:meth:`CellJob.checkpoint` resubmits the same cell (up to ``max_requeues`` times) and
:func:`~kdlab.experiments.grid.run_cell` resumes a run directory that holds ``checkpoints/last.ckpt`` of the
same config and no ``summary.json`` (``--resume``, exact at epoch granularity). Rerunning the command
resumes such runs in the same way.

Settings (the compare spec's ``launcher:`` section, overridden by the command line's flags) are checked by
:func:`launcher_settings` before anything is planned, written or submitted. Reference:
facebookincubator/submitit (``AutoExecutor``, ``helpers.Checkpointable``, ``DelayedSubmission``).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from rich.console import Console

from kdlab.config import ConfigError

__all__ = ["LAUNCHERS", "EXECUTORS", "LAUNCHER_KEYS", "SubmititSettings", "launcher_settings", "require_submitit",
           "check_cells", "job_folder", "cluster", "max_parallel", "CellJob", "submit_cells", "cell_launcher"]

#: ``--launcher`` values
LAUNCHERS = ("local", "submitit")
#: ``launcher.executor`` values: submitit's SLURM executor, its local one (jobs are processes here), or
#: SLURM when ``srun`` is on the PATH, else local
EXECUTORS = ("auto", "slurm", "local")


@dataclass(frozen=True)
class SubmititSettings:
    """The ``launcher:`` section of a compare spec (one job per run); the defaults are these fields'.

    Attributes:
        executor: one of :data:`EXECUTORS`.
        partition: SLURM partition; None = the cluster's default.
        time: minutes each job may run (submitit ``timeout_min``), >= 1.
        gpus_per_run: GPUs of each job (>= 0); runs on CUDA need >= 1.
        cpus_per_run: CPU cores of each job (>= 1); a CPU run gets ``trainer.threads`` = this.
        mem_gb: memory of each job in GB (> 0); None = the cluster's default.
        folder: submitit's own files (pickles, job logs); None = ``<report dir>/submitit``.
        max_parallel: jobs submitted at once (>= 1); None = all of them (SLURM), or cores // cpus_per_run
            with the local executor.
        max_requeues: times a preempted or timed-out job is resubmitted (>= 0).
    """

    executor: str = "auto"
    partition: Optional[str] = None
    time: int = 60
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem_gb: Optional[float] = None
    folder: Optional[str] = None
    max_parallel: Optional[int] = None
    max_requeues: int = 3


#: the keys of a spec's ``launcher:`` section, with their defaults
LAUNCHER_KEYS: Dict[str, Any] = asdict(SubmititSettings())
_INTS = {"time": 1, "gpus_per_run": 0, "cpus_per_run": 1, "max_parallel": 1, "max_requeues": 0}  # key -> least
_OPTIONAL = ("partition", "mem_gb", "folder", "max_parallel")


def _int(key: str, value: Any, least: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        unit = " (minutes)" if key == "time" else ""
        raise ConfigError(f"launcher.{key} = {value!r}: accepted: an integer >= {least}{unit}")
    return value


def _check(key: str, value: Any) -> Any:
    """One setting, checked (and numeric strings of the command line converted)."""
    if value is None and key in _OPTIONAL:
        return None
    if key == "executor":
        if value not in EXECUTORS:
            raise ConfigError(f"launcher.executor = {value!r}: accepted: {', '.join(EXECUTORS)}")
        return value
    if key in _INTS:
        return _int(key, value, _INTS[key])
    if key == "mem_gb":
        try:
            mem = float(value) if not isinstance(value, bool) else float("nan")
        except (TypeError, ValueError):
            mem = float("nan")
        if not 0 < mem < float("inf"):
            raise ConfigError(f"launcher.mem_gb = {value!r}: accepted: a number of GB > 0")
        return mem
    if not isinstance(value, str) or not value.strip():  # partition, folder
        raise ConfigError(f"launcher.{key} = {value!r}: accepted: a non-empty string"
                          + (" (a SLURM partition name)" if key == "partition" else " (a directory)"))
    if key == "folder" and Path(value).exists() and not Path(value).is_dir():
        raise ConfigError(f"launcher.folder = {value!r} is a file; accepted: a directory (new or existing)")
    return value


def launcher_settings(launcher: str, section: Optional[Mapping[str, Any]] = None,
                      options: Optional[Mapping[str, Any]] = None) -> Optional[SubmititSettings]:
    """Check ``--launcher``, the spec's ``launcher:`` section and the command line's launcher flags.

    Args:
        launcher: one of :data:`LAUNCHERS`.
        section: the spec's ``launcher:`` mapping (keys of :data:`LAUNCHER_KEYS`), or None.
        options: flag values by key (None = not given), applied over ``section``.

    Returns:
        The settings for ``submitit``; None for ``local`` (the spec's section is still checked).

    Raises:
        ConfigError: an unknown launcher, key or value (naming it and the accepted ones); a launcher flag
            with ``--launcher local``; ``submitit`` not installed (says ``pip install submitit``);
            ``executor: slurm`` where ``srun``/``sbatch`` are not on the PATH.
    """
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher {launcher!r}: accepted: {', '.join(LAUNCHERS)}")
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError(f"compare spec key 'launcher' must be a mapping with keys {', '.join(LAUNCHER_KEYS)}; "
                          f"got {section!r}")
    unknown = sorted(set(section or {}) - set(LAUNCHER_KEYS))
    if unknown:
        raise ConfigError(f"compare spec launcher: unknown key {unknown[0]!r}; accepted: {', '.join(LAUNCHER_KEYS)}")
    given = {k: v for k, v in (options or {}).items() if v is not None}
    values = {**LAUNCHER_KEYS, **dict(section or {}), **given}
    settings = SubmititSettings(**{k: _check(k, v) for k, v in values.items()})
    if launcher == "local":
        if given:
            flag = "--" + sorted(given)[0].replace("_", "-")
            raise ConfigError(f"{flag} sets the submitit launcher; accepted with it: --launcher submitit")
        return None
    require_submitit()
    if settings.executor == "slurm" and not (shutil.which("srun") and shutil.which("sbatch")):
        raise ConfigError("launcher.executor = 'slurm' but srun/sbatch are not on the PATH (not a SLURM login "
                          "node?); accepted here: local (jobs run on this machine), or auto")
    return settings


def job_folder(settings: SubmititSettings, out: Path) -> Path:
    """submitit's files: ``launcher.folder``, else ``out/submitit`` (``out``: the report directory)."""
    return Path(settings.folder) if settings.folder else Path(out) / "submitit"


def require_submitit() -> Any:
    """The ``submitit`` module, or a ConfigError saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher submitit needs the submitit package: pip install submitit "
                          "(or pip install 'kdlab[slurm]')") from None
    return submitit


def check_cells(cfgs: Sequence[Any], settings: SubmititSettings) -> None:
    """Runs vs job resources, before anything is submitted: one process per run (``trainer.devices`` 1),
    a GPU for CUDA runs and none wasted on CPU runs.

    Raises:
        ConfigError: naming the run, its key and the launcher setting.
    """
    for cfg in cfgs:
        acc, dev = cfg.trainer.accelerator, cfg.trainer.devices
        if dev not in (1, "1"):
            raise ConfigError(f"run {cfg.name!r}: trainer.devices = {dev!r}; the submitit launcher runs one process "
                              f"per run: accepted: trainer.devices=1")
        if acc in ("cuda", "gpu") and settings.gpus_per_run < 1:
            raise ConfigError(f"run {cfg.name!r} trains on trainer.accelerator={acc} but launcher.gpus_per_run = 0; "
                              f"accepted: gpus_per_run >= 1 (or trainer.accelerator=cpu)")
        if acc == "cpu" and settings.gpus_per_run > 0:
            raise ConfigError(f"run {cfg.name!r} trains on trainer.accelerator=cpu but launcher.gpus_per_run = "
                              f"{settings.gpus_per_run}; accepted: gpus_per_run: 0, or trainer.accelerator=auto "
                              f"(resolved on the node)")


def _executor(settings: SubmititSettings, folder: Path, name: str) -> Any:
    submitit = require_submitit()
    requeues = settings.max_requeues
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster(settings), slurm_max_num_timeout=requeues,
                               local_max_num_timeout=requeues)
    params: Dict[str, Any] = {"name": name, "timeout_min": settings.time, "nodes": 1, "tasks_per_node": 1,
                              "gpus_per_node": settings.gpus_per_run, "cpus_per_task": settings.cpus_per_run}
    if settings.mem_gb is not None:
        params["mem_gb"] = settings.mem_gb
    if settings.partition is not None:
        params["slurm_partition"] = settings.partition
    ex.update_parameters(**params)
    return ex


def cluster(settings: SubmititSettings) -> str:
    """The executor that runs the jobs: ``slurm`` or ``local`` (``auto``: SLURM where ``srun`` is on the
    PATH, as submitit's ``AutoExecutor`` decides)."""
    if settings.executor != "auto":
        return settings.executor
    return "slurm" if shutil.which("srun") else "local"


def max_parallel(settings: SubmititSettings, n_jobs: int) -> int:
    """Jobs in flight at once: the setting, else all ``n_jobs`` (SLURM queues them) or cores // cpus_per_run
    (the local executor's jobs share this machine)."""
    if settings.max_parallel is not None:
        return settings.max_parallel
    if cluster(settings) == "local":
        from kdlab.compare.plan import worker_threads

        return worker_threads(settings.cpus_per_run)
    return max(1, n_jobs)


class CellJob:
    """One run as a submitit job: calls :func:`kdlab.compare.execute.work` (append to its log, resume an
    interrupted run of the same config). ``checkpoint`` makes it requeueable (submitit calls it on
    preemption / time-out and resubmits what it returns, as ``helpers.Checkpointable`` does)."""

    def __init__(self, sources: List[Any], overrides: List[str], log: str, expected: Optional[str] = None,
                 callbacks: Sequence[Any] = (), needs: Sequence[str] = ()) -> None:
        self.sources, self.overrides, self.log, self.expected = list(sources), list(overrides), log, expected
        self.callbacks, self.needs = list(callbacks), list(needs)

    def __call__(self) -> Dict[str, Any]:
        from kdlab.compare.execute import work

        return work(self.sources, self.overrides, self.log, append=True, expected=self.expected,
                    callbacks=self.callbacks, needs=self.needs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """The same cell again: its run directory's ``last.ckpt`` makes :func:`grid.run_cell` resume it."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def submit_cells(jobs: Sequence[CellJob], names: Sequence[str], settings: SubmititSettings, folder: Path,
                 console: Optional[Console], on_done: Callable[[str, Dict[str, Any], Optional[str]], None],
                 poll_s: float = 0.5) -> None:
    """Submit ``jobs`` (at most :func:`max_parallel` in flight), wait for all, and call
    ``on_done(name, result, job_id)`` as each ends (``result``: :func:`work`'s dict; a job that died
    without one (killed, out of memory, not requeued) gives ``{"ok": False, "error": ...}``).

    Ctrl-C cancels the jobs in flight (their runs keep ``last.ckpt``; a rerun resumes them) and re-raises.
    """
    from kdlab.compare.execute import error_text

    console = console or Console(stderr=True)
    ex = _executor(settings, folder, name=f"kdlab-{names[0]}" if len(names) == 1 else "kdlab")
    limit = max_parallel(settings, len(jobs))
    todo = list(zip(names, jobs))
    running: Dict[Any, tuple] = {}
    try:
        while todo or running:
            while todo and len(running) < limit:
                name, job = todo.pop(0)
                running[ex.submit(job)] = (name, time.perf_counter())
            for handle in [h for h in running if h.done()]:
                name, t0 = running.pop(handle)
                try:
                    res = handle.result()
                except Exception as exc:  # the job died without a result (killed, out of memory, ...)
                    res = {"ok": False, "seconds": time.perf_counter() - t0,
                           "error": f"submitit job {handle.job_id} failed: {error_text(exc)} "
                                    f"(its output: {handle.paths.stderr})"}
                on_done(name, res, str(handle.job_id))
            if running:
                time.sleep(poll_s)
    except BaseException:
        for handle in running:
            handle.cancel(check=False)
        if running:
            console.print(f"cancelled {len(running)} submitted job(s); rerun the command to resume their runs "
                          f"from their last checkpoints")
        raise


def cell_launcher(settings: SubmititSettings, folder: Path, logs: Path,
                  console: Optional[Console] = None) -> Callable[..., Path]:
    """A function for :func:`kdlab.experiments.grid.launched_by` (``kdlab reproduce --launcher submitit``):
    each cell that is not reused becomes one job, submitted and waited for (an experiment's cells
    depend on each other's results, so they run one after the other).

    The returned ``launch(cfg, sources, overrides, callbacks, needs) -> Path`` raises
    ChildProcessError naming the run, its error and its log when the job fails.
    """
    console = console or Console(stderr=True)

    def launch(cfg: Any, sources: Sequence[Any], overrides: Sequence[str], callbacks: Sequence[Any] = (),
               needs: Sequence[str] = ()) -> Path:
        from kdlab.config import to_yaml

        check_cells([cfg], settings)
        log = logs / f"{cfg.name}.log"
        job = CellJob(list(sources), list(overrides), str(log), to_yaml(cfg), callbacks, needs)
        out: Dict[str, Any] = {}
        console.print(f"[bold]{cfg.name}[/]: submitted (log: {log})")
        submit_cells([job], [cfg.name], settings, folder, console, lambda n, r, j: out.update(r))
        if not out.get("ok"):
            raise ChildProcessError(f"run {cfg.name!r} failed in its submitit job: {out.get('error')} (log: {log})")
        console.print(f"[bold]{cfg.name}[/]: finished in {out['seconds']:.1f} s")
        return Path(out["run"])

    return launch
