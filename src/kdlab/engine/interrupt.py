"""Ctrl-C during training: the first SIGINT stops a one-process run at the next step boundary (the loop checks
:class:`StepBoundaryInterrupt` after each step and raises :class:`TrainingInterrupted`); ``last.ckpt`` of the
last completed epoch stays, and ``--resume`` continues from it bit-exactly."""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Optional


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run at a step boundary (one process). ``last_checkpoint`` is the last completed
    epoch's ``last.ckpt`` (``None`` when no epoch had completed); ``--resume`` continues from it bit-exactly."""

    def __init__(self, epoch: int, step: int, last_checkpoint: Optional[Path]) -> None:
        super().__init__(f"interrupted in epoch {epoch + 1}, after step {step}")
        self.epoch, self.step, self.last_checkpoint = epoch, step, last_checkpoint


class StepBoundaryInterrupt:
    """While entered, the first Ctrl-C (SIGINT) only sets ``requested``; the loop stops at the next step
    boundary. A second Ctrl-C interrupts at once (the previous handler is back). Inactive off the main
    thread and under several processes (ranks stopping at different steps would hang a collective)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested, self._previous = False, None

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __enter__(self) -> "StepBoundaryInterrupt":
        if self.enabled:
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)
