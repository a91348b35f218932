"""Paper experiments: one registered function per table or figure, run by ``kdlab reproduce NAME``.

An experiment is registered in :data:`EXPERIMENTS` as
``fn(out_dir: Path, scale: str, seeds: Optional[list[int]], overrides: list[str]) -> Path`` that runs
its grid of runs (each an ordinary run directory under ``out_dir``), then writes and returns the
path of a report (``out_dir/<experiment>/report.md``) with mean +- std over seeds beside the paper's
numbers. ``scale`` is ``"small"`` (2 CPU cores, well under an hour) or ``"full"`` (the paper's
protocol, for a GPU). Every experiment runs its cells and writes its report with the shared grid
runner :mod:`kdlab.experiments.grid` (a finished run of the same resolved config is reused).
Experiment modules are imported here so that they register themselves; the declarative ones are
compare specs under ``recipes/experiments/`` (:mod:`kdlab.experiments.specs`), whose report goes to
``<results>/<experiment>/<scale>/``.
"""
from __future__ import annotations

from kdlab.registry import Registry

EXPERIMENTS = Registry("experiment")
SCALES = ("small", "full")

__all__ = ["EXPERIMENTS", "SCALES"]

# Experiment modules register themselves on import (kept at the end: they import EXPERIMENTS).
from kdlab.experiments import kdgan_traces  # noqa: E402,F401  (the callbacks of kdgan-fig6/fig7, kdgan-teacher-collapse)
from kdlab.experiments import specs  # noqa: E402,F401  (every spec of recipes/experiments/: gan-*, jacobian-*, kdgan-*, loss-families, mosaickd, vem-*)
