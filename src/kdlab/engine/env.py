"""Provenance recorded in every ``summary.json`` (package versions, the git commit) and in a report's
``environment.json`` (those and the hardware)."""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional


def versions() -> Dict[str, str]:
    """Versions of Python and of the packages a result depends on."""
    out = {"python": platform.python_version()}
    for pkg in ("kdlab", "torch", "torchvision", "lightning-fabric", "torchmetrics", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit(cwd: Optional[Path] = None) -> Optional[str]:
    """The current commit of the kdlab source tree (``None`` outside a git checkout)."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> Dict[str, Any]:
    """The machine: OS, CPU model, logical cores (and those this process may use), memory, GPU names."""
    import os

    import torch

    out: Dict[str, Any] = {"platform": platform.platform(), "cpu": _cpu_model(), "cores": os.cpu_count(),
                           "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    try:
        out["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):  # not on this OS
        out["memory_gb"] = None
    out["gpus"] = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                   if torch.cuda.is_available() else [])
    return out


def environment(wall_time_s: Optional[float] = None) -> Dict[str, Any]:
    """A report's ``environment.json``: :func:`versions`, :func:`git_commit`, :func:`hardware` and the
    total wall time in seconds."""
    return {"versions": versions(), "git_commit": git_commit(), "hardware": hardware(), "wall_time_s": wall_time_s}
