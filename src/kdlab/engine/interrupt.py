"""Ctrl-C or SIGTERM during training: the first SIGINT/SIGTERM stops a one-process run at the next step
boundary (the loop checks :class:`StepBoundaryInterrupt` after each step and raises
:class:`TrainingInterrupted`); ``last.ckpt`` of the last completed epoch stays, and ``--resume`` continues
from it bit-exactly. SIGTERM is what ``kill``, a scheduler's pre-emption and ``timeout`` send."""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Dict, Optional

#: the signals that stop a run at a step boundary
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run at a step boundary (one process). ``last_checkpoint`` is the last
    completed epoch's ``last.ckpt`` (``None`` when no epoch had completed); ``--resume`` continues from it
    bit-exactly. ``signal_name``: ``"SIGINT"`` or ``"SIGTERM"``."""

    def __init__(self, epoch: int, step: int, last_checkpoint: Optional[Path], signal_name: str = "SIGINT") -> None:
        how = "" if signal_name == "SIGINT" else f" by {signal_name}"
        super().__init__(f"interrupted{how} in epoch {epoch + 1}, after step {step}")
        self.epoch, self.step, self.last_checkpoint, self.signal_name = epoch, step, last_checkpoint, signal_name


class StepBoundaryInterrupt:
    """While entered, the first SIGINT or SIGTERM only sets ``requested`` (and ``signal_name``); the loop
    stops at the next step boundary. A second one of the same signal acts at once (the previous handler is
    back). Inactive off the main thread and under several processes (ranks stopping at different steps
    would hang a collective)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested, self.signal_name = False, None
        self._previous: Dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        self.signal_name = self.signal_name or signal.Signals(signum).name
        signal.signal(signum, self._previous[signum])

    def __enter__(self) -> "StepBoundaryInterrupt":
        if self.enabled:
            for sig in SIGNALS:
                previous = signal.getsignal(sig)  # None: installed outside Python
                self._previous[sig] = signal.SIG_DFL if previous is None else previous
                signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
