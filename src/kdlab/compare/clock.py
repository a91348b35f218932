"""The wall time of a comparison over all its invocations.

A comparison that was interrupted (a killed process, a machine given back) and started again reuses the
runs it had finished, so the wall time of the invocation that writes the report understates what the
comparison cost. Each invocation keeps a file ``<out_dir>/.compare-time/<name>/<token>.json``
(``{"started", "elapsed_s", "pid"}``), rewritten every ``every_s`` seconds while it runs and once more when
it ends. The invocation that writes the report adds the elapsed time of the earlier invocations that ended
without one (:meth:`InvocationClock.finish`) and removes their files, so the next complete invocation
counts from zero. Two invocations of the same comparison at the same time would count each other: the run
directories' locks refuse that anyway.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from kdlab.engine import atomic_write_text

__all__ = ["InvocationClock", "CLOCK_DIR"]

#: the folder under the comparison's run folder (``out_dir``) that holds the invocations' files
CLOCK_DIR = ".compare-time"


class InvocationClock:
    """Records this invocation's elapsed time while it runs; a context manager (the file stays when the
    body raises: that invocation then counts as an earlier one for the next).

    Args:
        out_dir: the parent of the comparison's run directories.
        name: the comparison's name (the spec's ``name``).
        t0: ``time.perf_counter()`` when the invocation started (default: now).
        every_s: seconds between two writes of the elapsed time (> 0).
    """

    def __init__(self, out_dir: Path, name: str, t0: Optional[float] = None, every_s: float = 30.0) -> None:
        self.folder = Path(out_dir) / CLOCK_DIR / str(name)
        self.path = self.folder / f"{uuid.uuid4().hex[:12]}.json"
        self.t0 = time.perf_counter() if t0 is None else t0
        self.every_s = float(every_s)
        self.started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._finished = False

    def elapsed(self) -> float:
        """Seconds since ``t0``."""
        return time.perf_counter() - self.t0

    def _write(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps({"started": self.started, "elapsed_s": self.elapsed(),
                                                     "pid": os.getpid()}) + "\n")
        except OSError:  # a read-only or full disk costs this record, never the comparison
            pass

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            self._write()

    def __enter__(self) -> "InvocationClock":
        self._write()
        self._thread = threading.Thread(target=self._beat, name="kdlab-compare-clock", daemon=True)
        self._thread.start()
        return self

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __exit__(self, *exc: Any) -> None:
        self._halt()
        if not self._finished:
            self._write()

    def finish(self) -> Dict[str, Any]:
        """This invocation's and the earlier, unfinished invocations' times, for ``results.json``; removes
        every file of this comparison (its own included). Unreadable files count 0.

        Returns:
            ``{"wall_time_s": this invocation's seconds, "earlier_wall_time_s": the earlier ones' sum,
            "earlier_invocations": how many}``.
        """
        self._halt()
        self._finished = True
        earlier, n = 0.0, 0
        for f in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            if f != self.path:
                try:
                    earlier += float(json.loads(f.read_text())["elapsed_s"])
                    n += 1
                except (OSError, ValueError, KeyError, TypeError):
                    pass
            f.unlink(missing_ok=True)
        for folder in (self.folder, self.folder.parent):  # only when empty
            try:
                folder.rmdir()
            except OSError:
                pass
        return {"wall_time_s": self.elapsed(), "earlier_wall_time_s": earlier, "earlier_invocations": n}
