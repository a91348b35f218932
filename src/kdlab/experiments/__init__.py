"""Paper experiments: one registered function per table or figure, run by ``kdlab reproduce NAME``.

An experiment is registered in :data:`EXPERIMENTS` as
``fn(out_dir: Path, scale: str, seeds: Optional[list[int]], overrides: list[str]) -> Path`` that runs
its grid of runs (each an ordinary run directory under ``out_dir``), then writes and returns the
path of a report (``out_dir/<experiment>/report.md``) with mean +- std over seeds beside the paper's
numbers. ``scale`` is ``"small"`` (2 CPU cores, well under an hour) or ``"full"`` (the paper's
protocol, for a GPU). Experiment modules are imported here so that they register themselves.
"""
from __future__ import annotations

from kdlab.registry import Registry

EXPERIMENTS = Registry("experiment")
SCALES = ("small", "full")

__all__ = ["EXPERIMENTS", "SCALES"]

# experiment modules register themselves on import (after EXPERIMENTS exists)
from kdlab.experiments import jacobian as _jacobian  # noqa: E402,F401
