"""Run logging: ``metrics.jsonl`` (one JSON object per log step), TensorBoard, rich progress."""
from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


class MetricsLog:
    """Appends one JSON object per call to ``metrics.jsonl`` and mirrors scalars to Fabric's loggers.

    Args:
        path: the ``metrics.jsonl`` file.
        fabric: optional Fabric whose loggers (TensorBoard) receive the same scalars.
        enabled: False on non-zero ranks.
    """

    def __init__(self, path: Path, fabric: Any = None, enabled: bool = True) -> None:
        self.path = Path(path)
        self.fabric = fabric
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def truncate_after(self, epoch: int) -> None:
        """Drop lines of epochs >= ``epoch`` (a resumed run rewrites them).

        A last line that does not parse (a write cut short when the run was killed) is dropped with a
        :class:`kdlab.engine.runlock.RunDirWarning` naming the file.

        Raises:
            ValueError: a line before the last is not a JSON object (names the file and line).
        """
        if not (self.enabled and self.path.is_file()):
            return
        lines = self.path.read_text().splitlines()
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        keep = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            except ValueError as exc:  # JSONDecodeError is a ValueError
                if i != last:
                    raise ValueError(f"{str(self.path)!r} line {i + 1} is not a JSON object ({exc}); fix or remove "
                                     f"that line to resume") from None
                from kdlab.engine.runlock import RunDirWarning

                warnings.warn(f"{str(self.path)!r} line {i + 1}: dropping a torn last line (a write cut short): "
                              f"{line[:60]!r}", RunDirWarning, stacklevel=2)
                continue
            if row.get("epoch", 0) < epoch:
                keep.append(line)
        from kdlab.engine.checkpoint import atomic_write_text

        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def log(self, step: int, epoch: int, values: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"epoch": epoch, "step": step, "time": round(time.perf_counter() - self.t0, 3)}
        row.update({k: _plain(v) for k, v in values.items()})
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.fabric is not None and self.fabric.loggers:
            scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("step", "time")}
            self.fabric.log_dict(scalars, step=step)


class ProgressBar:
    """A rich progress bar over epochs x steps, showing the latest losses and throughput.

    Drawn only where the console is a terminal (or a notebook): elsewhere (a log file, CI) rich would write
    just the bar's last frame, cut to 80 columns, beside the epoch lines that :meth:`print` writes anyway;
    and rendering it costs a few ms a run."""

    def __init__(self, enabled: bool = True, console: Optional[Console] = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self._progress: Optional[Progress] = None
        self._task = None
        self._pending, self._due = 0, 0.0  # steps not yet shown, when to show them

    def __enter__(self) -> "ProgressBar":
        if self.enabled and (self.console.is_terminal or self.console.is_jupyter):
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=False,
                refresh_per_second=4,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._flush()
            self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, total: int) -> None:
        if self._progress is None:
            return
        if self._task is not None:
            self._flush()
            self._progress.update(self._task, visible=True)
        self._task = self._progress.add_task(f"epoch {epoch + 1}/{epochs}", total=total, info="")

    def advance(self, n: int = 1) -> None:
        """``n`` more steps done. Shown at most every 0.1 s (the bar redraws 4 times a second; rich's
        ``advance`` takes a lock and a speed sample: ~20 us, a few percent of a fast step)."""
        if self._progress is not None:
            self._pending += n
            now = time.perf_counter()
            if now >= self._due:
                self._flush(now)

    def _flush(self, now: Optional[float] = None) -> None:
        if self._pending:
            self._progress.advance(self._task, self._pending)
            self._pending = 0
        self._due = (time.perf_counter() if now is None else now) + 0.1

    def set_info(self, values: Dict[str, Any]) -> None:
        if self._progress is not None:
            self._flush()
            info = "  ".join(f"{k.split('/')[-1]}={_fmt(v)}" for k, v in values.items())
            self._progress.update(self._task, info=info)

    def print(self, text: str) -> None:
        if self._progress is not None:
            self._flush()
            self._progress.console.print(text)
        else:
            self.console.print(text)


def _fmt(v: Any) -> str:
    v = _plain(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_values(values: Dict[str, Any], keys: Iterable[str]) -> str:
    """``"k=v  k=v"`` for the given keys that are present."""
    return "  ".join(f"{k}={_fmt(values[k])}" for k in keys if k in values)
