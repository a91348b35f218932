"""Exclusive ownership of a run directory: :class:`RunLock` holds ``<out_dir>/<name>.lock`` (JSON: pid,
host, start time) for the whole run.

A lock whose holder is alive refuses the run, naming the pid; a lock left by a dead process on this host
is taken over with a :class:`RunDirWarning`; a lock from another host is refused with the command that
removes it (this host cannot tell whether that run is alive). What a run may do inside the directory is
:mod:`kdlab.engine.rundir`'s.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ["LOCK_SUFFIX", "RunDirError", "RunDirWarning", "RunLock", "lock_path"]

LOCK_SUFFIX = ".lock"

class RunDirError(ValueError):
    """A run directory cannot be used as asked; the message names it and what to do instead."""


class RunDirWarning(UserWarning):
    """Something in a run directory was repaired on start (a dead process's lock, a torn log line)."""


def lock_path(run_dir: Path) -> Path:
    """The lock file of ``run_dir``: beside it, so that moving the old run aside does not move the lock."""
    return run_dir.parent / f"{run_dir.name}{LOCK_SUFFIX}"


def _proc_start(pid: int) -> Optional[str]:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the command name may hold spaces


def _alive(holder: Dict[str, Any]) -> bool:
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    start = holder.get("proc_start")
    now = _proc_start(pid)
    # the same pid with another start time is a new process that reused the number
    return not (start and now and start != now)


def _read_lock(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "pid" in data else None


def _holder_text(h: Dict[str, Any]) -> str:
    return f"process {h.get('pid')} on host {h.get('host')!r} (started {h.get('started')})"


class RunLock:
    """Exclusive ownership of a run directory, held in ``<out_dir>/<name>.lock``.

    Use as a context manager or :meth:`acquire` / :meth:`release`; releasing removes the lock only
    while it is still this object's (a lock taken over by someone else is left alone).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = lock_path(self.run_dir)
        self.held = False
        self.info: Dict[str, Any] = {}

    def acquire(self) -> "RunLock":
        """Take the lock.

        Raises:
            RunDirError: another live process holds it (names its pid), it was taken on another host
                (says how to remove it), it is not a kdlab lock file, or its folder cannot be created.
        Warns:
            RunDirWarning: the lock of a dead process on this host was taken over.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # /proc/x, a read-only mount, a full disk: name the folder, not only the errno
            raise RunDirError(f"cannot create the folder {str(self.path.parent)!r} that holds the run directory "
                              f"{self.run_dir.name!r}: {exc.strerror or exc}; accepted: out_dir in a folder you can "
                              f"write (created if missing)") from None
        pid = os.getpid()
        self.info = {"pid": pid, "host": socket.gethostname(),
                     "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                     "proc_start": _proc_start(pid), "token": uuid.uuid4().hex, "argv": list(sys.argv)}
        for _ in range(5):
            try:
                self._create()
                self.held = True
                return self
            except FileExistsError:
                pass
            try:
                holder = _read_lock(self.path)
            except FileNotFoundError:  # released meanwhile: try again
                continue
            if holder is None:
                raise RunDirError(f"{str(self.path)!r} exists but is not a kdlab lock file; if no run named "
                                  f"{self.run_dir.name!r} is going on, remove it (rm {self.path}) and start again")
            if holder.get("host") != self.info["host"]:
                raise RunDirError(f"run directory {str(self.run_dir)!r} is locked by {_holder_text(holder)}, which this "
                                  f"host cannot check; if that run is no longer going on, remove the lock "
                                  f"(rm {self.path}) and start again")
            if _alive(holder):
                raise RunDirError(f"run directory {str(self.run_dir)!r} is in use by {_holder_text(holder)}; wait "
                                  f"for it to end, or give this run another name=")
            if self._take_over(holder):
                warnings.warn(f"taking over {str(self.path)!r}: its holder, {_holder_text(holder)}, is no longer "
                              f"running", RunDirWarning, stacklevel=2)
        raise RunDirError(f"could not take the lock {str(self.path)!r}: other processes keep taking it")

    def _create(self) -> None:
        # written to a temporary file and hard-linked into place: the lock appears complete or not at all
        tmp = self.path.with_name(f".{self.path.name}.{self.info['token']}.tmp")
        tmp.write_text(json.dumps(self.info, indent=1) + "\n")
        try:
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(fd, "w") as fh:
                    fh.write(tmp.read_text())
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, holder: Dict[str, Any]) -> bool:
        """Remove a dead holder's lock; False when another process replaced it meanwhile."""
        aside = self.path.with_name(f".{self.path.name}.{self.info['token']}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            if _read_lock(aside) != holder:  # renamed a newer lock: put it back
                try:
                    os.link(aside, self.path)
                except OSError:
                    pass
                return False
            return True
        finally:
            aside.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if it is still ours (idempotent)."""
        if not self.held:
            return
        self.held = False
        try:
            holder = _read_lock(self.path)
        except FileNotFoundError:
            return
        if holder is not None and holder.get("token") == self.info["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
