"""Who may write a run directory ``<out_dir>/<name>/``, and what a new run or ``--resume`` may do there.

- **One process per run directory.** :class:`~kdlab.engine.runlock.RunLock` holds ``<out_dir>/<name>.lock``
  for the whole run (:mod:`kdlab.engine.runlock`).
- **No silent overwrite.** :func:`check_run_dir` refuses a directory that already holds a run unless
  ``--resume`` (continue it) or ``--overwrite`` (move it aside to ``<name>.old-<timestamp>``) is given.
- **Nothing written before every check has passed.** :func:`check_run_dir` only reads; the plan it
  returns writes (:meth:`RunDirPlan.commit`: move aside, clean stale temporaries, ``config.yaml``,
  ``config_history.yaml``) once the caller has built everything else.
- **Resume may change what is safe mid-run** (:data:`SAFE_ON_RESUME`: the learning rate, the number
  of epochs, logging, threads, devices, data workers, latency and teacher-cache settings); any other
  changed key is refused by name (:func:`resume_changes`). Accepted changes are appended to
  ``config_history.yaml``; ``config.yaml`` becomes the new resolved config.
"""
from __future__ import annotations

import datetime as _dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from kdlab.engine.runlock import RunDirError

HISTORY_FILE = "config_history.yaml"
#: config keys a resumed run may change: how long, how fast and how loudly it runs, not what it trains
SAFE_ON_RESUME = (
    "label",
    "optim.lr",
    "trainer.epochs",
    "trainer.log_every_n_steps",
    "trainer.progress",
    "trainer.tensorboard",
    "trainer.threads",
    "trainer.devices",
    "trainer.accelerator",
    "trainer.strategy",
    "trainer.num_nodes",
    "trainer.teacher_cache",
    "trainer.teacher_cache_dir",
    "trainer.teacher_cache_memory_mb",
    "trainer.teacher_cache_exact",
    "data.num_workers",
    "data.pin_memory",
    "data.on_device",
    "eval.latency",
    "eval.latency_iters",
)


def run_directory(out_dir: Any, name: str) -> Path:
    """``<out_dir>/<name>``, refusing a name that would leave ``out_dir`` or be ``out_dir`` itself.

    Raises:
        RunDirError: ``name`` is empty, ``.``, ``..``, absolute or holds a path separator (names the value).
    """
    name = str(name)
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name):
        raise RunDirError(f"config key 'name' = {name!r} must name a directory inside out_dir ({str(out_dir)!r}): "
                          f"letters, digits, '.', '_' or '-', not '.' or '..' and no '/'")
    return Path(out_dir) / name


def stale_temps(run_dir: Path) -> List[Path]:
    """Temporaries of :func:`kdlab.engine.checkpoint.atomic_write` (``.<name>.<random>.tmp``) left in
    ``run_dir`` and its sub-directories by a process that was killed mid-write."""
    run_dir = Path(run_dir)
    return sorted(p for p in run_dir.rglob(".*.tmp") if p.is_file()) if run_dir.is_dir() else []


def _get(d: Any, key: str) -> Any:
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _diff_keys(a: Any, b: Any, prefix: str = "") -> List[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: List[str] = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def resume_changes(saved_yaml: str, current_yaml: str, where: Any, epochs_done: int) -> Dict[str, Dict[str, Any]]:
    """The config keys that differ between the checkpoint ``where`` (written with ``saved_yaml``, after
    ``epochs_done`` epochs) and this run: ``{key: {"from": old, "to": new}}``.

    Raises:
        RunDirError: a changed key outside :data:`SAFE_ON_RESUME` (names each key, its two values and the
            keys that may change); ``trainer.epochs`` below ``epochs_done``.
    """
    from omegaconf import OmegaConf

    saved = OmegaConf.to_container(OmegaConf.create(saved_yaml))
    current = OmegaConf.to_container(OmegaConf.create(current_yaml))
    keys = sorted(_diff_keys(saved, current))
    changes = {k: {"from": _get(saved, k), "to": _get(current, k)} for k in keys}
    refused = [k for k in keys if k not in SAFE_ON_RESUME]
    if refused:
        what = "; ".join(f"{k} = {changes[k]['to']!r} (was {changes[k]['from']!r})" for k in refused)
        raise RunDirError(f"--resume: {what}: {'this key' if len(refused) == 1 else 'these keys'} may not change "
                          f"in a resumed run (the checkpoint {str(where)!r} was trained with the old value); a resumed "
                          f"run may change only {', '.join(SAFE_ON_RESUME)}. To change "
                          f"{'it' if len(refused) == 1 else 'them'}, start a new run (another name=, or --overwrite)")
    epochs = _get(current, "trainer.epochs")
    if isinstance(epochs, int) and epochs < epochs_done:
        raise RunDirError(f"--resume: trainer.epochs = {epochs} is below the {epochs_done} epochs the checkpoint "
                          f"{str(where)!r} has done; accepted: trainer.epochs >= {epochs_done}")
    return changes


@dataclass
class RunDirPlan:
    """What :func:`check_run_dir` found and what :meth:`commit` will write."""

    run_dir: Path
    resume: bool = False
    move_aside: bool = False
    state: Optional[Dict[str, Any]] = None  # the loaded last.ckpt when resuming
    changes: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    moved_to: Optional[Path] = None
    # --resume of a finished run (summary.json) with the same config: nothing to train; training its end
    # again rewrote summary.json with a 0 s training time and no last validation accuracy
    finished: bool = False

    def commit(self, config_yaml: str, log: Any = None) -> None:
        """Make the run directory: move an old run aside (``--overwrite``, said through ``log``), remove
        stale temporaries, write ``config.yaml`` and append accepted resume changes to
        ``config_history.yaml``. Call it holding the lock, after every check has passed."""
        from kdlab.engine.checkpoint import atomic_write_text

        say = log or (lambda text: print(text, file=sys.stderr))
        if self.move_aside and self.run_dir.exists():
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            dest = self.run_dir.with_name(f"{self.run_dir.name}.old-{stamp}")
            n = 1
            while dest.exists():
                n += 1
                dest = self.run_dir.with_name(f"{self.run_dir.name}.old-{stamp}-{n}")
            os.rename(self.run_dir, dest)
            self.moved_to = dest
            say(f"--overwrite: moved the existing run {str(self.run_dir)!r} to {str(dest)!r}")
        for tmp in stale_temps(self.run_dir):
            tmp.unlink(missing_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", config_yaml)
        if self.changes:
            record_config_change(self.run_dir, self.changes, int(self.state["epoch"]) if self.state else 0)


def record_config_change(run_dir: Path, changes: Dict[str, Dict[str, Any]], epoch: int) -> Path:
    """Append ``{resumed_at_epoch, time, changed}`` to ``run_dir/config_history.yaml`` (a YAML list)."""
    import yaml

    from kdlab.engine.checkpoint import atomic_write_text

    path = Path(run_dir) / HISTORY_FILE
    history = yaml.safe_load(path.read_text()) if path.is_file() else None
    history = history if isinstance(history, list) else []
    history.append({"resumed_at_epoch": epoch,
                    "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "changed": changes})
    return atomic_write_text(path, yaml.safe_dump(history, sort_keys=False))


def _describe(run_dir: Path, content: List[Path]) -> tuple:
    """(what the directory holds, the advice) for a refusal."""
    if (run_dir / "summary.json").is_file():
        return ("a finished run (summary.json)",
                "use --overwrite to move it aside and start again, or --resume with a larger trainer.epochs to "
                "train it on")
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return ("an interrupted run (checkpoints/last.ckpt, no summary.json)",
                "use --resume to continue it, or --overwrite to move it aside and start again")
    names = ", ".join(sorted(p.name for p in content)[:5])
    return (f"files of a run that stopped before its first checkpoint ({names})",
            "there is nothing to --resume: use --overwrite to move it aside and start again")


def check_run_dir(run_dir: Path, config_yaml: str, resume: bool = False, overwrite: bool = False) -> RunDirPlan:
    """Decide what a run may do in ``run_dir``, reading only (call it holding the :class:`RunLock`).

    - a new or empty directory: a fresh run;
    - ``resume``: ``checkpoints/last.ckpt`` must exist and its config may differ only in
      :data:`SAFE_ON_RESUME` (the loaded checkpoint and the changes are in the plan); a finished run
      (``summary.json``) with an unchanged config is ``finished``: nothing to train or write;
    - ``overwrite``: an existing run is moved aside by :meth:`RunDirPlan.commit`;
    - neither, over an existing run: refused.

    Raises:
        RunDirError: an existing run without ``--resume``/``--overwrite`` (says which to use), both
            flags, a forbidden change on resume (:func:`resume_changes`), a path that is not a directory.
        FileNotFoundError: ``--resume`` without ``checkpoints/last.ckpt``.
        ValueError: ``last.ckpt`` is not a kdlab run checkpoint.
    """
    from kdlab.engine.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunDirError("--resume continues the run in place and --overwrite moves it aside: give one of them")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{str(run_dir)!r} exists and is not a run directory; remove it or give another name=")
    temps = set(stale_temps(run_dir))
    content = [p for p in run_dir.iterdir() if p not in temps and not (p.is_dir() and _only_temps(p, temps))] \
        if run_dir.is_dir() else []
    plan = RunDirPlan(run_dir)
    if resume:
        from kdlab.engine.loop import CKPT_FORMAT

        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            advice = ("start the run without --resume" if not content else
                      "the run stopped before its first checkpoint: start it again with --overwrite")
            raise FileNotFoundError(f"--resume: {str(last)!r} does not exist; {advice}")
        state = load_checkpoint(last)
        if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
            fmt = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{str(last)!r} is not a kdlab run checkpoint (format {fmt!r})")
        plan.resume, plan.state = True, state
        plan.changes = resume_changes(state["config"], config_yaml, last, int(state["epoch"]))
        plan.finished = (run_dir / "summary.json").is_file() and not plan.changes
        return plan
    if content:
        what, advice = _describe(run_dir, content)
        if not overwrite:
            raise RunDirError(f"run directory {str(run_dir)!r} already holds {what}; {advice} "
                              f"(or give this run another name=)")
        plan.move_aside = True
    return plan


def _only_temps(d: Path, temps: set) -> bool:
    return all(p in temps or p.is_dir() for p in d.rglob("*"))
