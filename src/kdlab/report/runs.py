"""Reading a run directory (the contract in DESIGN.md).

``runs/<name>/`` holds ``config.yaml`` (resolved config), ``metrics.jsonl`` (one JSON object per
log step: ``epoch``, ``step``, ``time`` and e.g. ``train/loss``, ``val/acc``) and ``summary.json``
(final metrics, written by the engine). Every reader raises :class:`RunFileError` (a
``FileNotFoundError``) naming the missing path, and ``ValueError`` naming the file and line for
content that cannot be parsed.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

PathLike = Union[str, Path]

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"

__all__ = [
    "RunFileError",
    "RunData",
    "read_summary",
    "read_metrics",
    "read_config",
    "load_run",
    "epoch_series",
    "noise_series",
]


class RunFileError(FileNotFoundError):
    """A file that a run directory must hold is missing; the message names its path."""


def _require(path: Path, what: str) -> Path:
    if not path.parent.is_dir():
        raise RunFileError(f"run directory {str(path.parent)!r} does not exist (looking for {what} {str(path)!r})")
    if not path.is_file():
        present = sorted(p.name for p in path.parent.iterdir())
        raise RunFileError(
            f"{what} not found: {str(path)!r} (the directory holds: {', '.join(present) or 'nothing'}); "
            "is this a kdlab run directory, and did the run finish?"
        )
    return path


def read_summary(run_dir: PathLike) -> Dict[str, Any]:
    """The parsed ``<run_dir>/summary.json``.

    Raises:
        RunFileError: the run directory or its summary.json does not exist (names the path).
        ValueError: the file is not a JSON object (names the path).
    """
    path = _require(Path(run_dir) / SUMMARY_FILE, "run summary")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


def read_metrics(run_dir: PathLike) -> List[Dict[str, Any]]:
    """The records of ``<run_dir>/metrics.jsonl``, in file order (blank lines skipped).

    A last line that does not parse (a write cut short when a run was killed) is skipped with a
    warning; a bad line elsewhere is an error.

    Raises:
        RunFileError: the file does not exist (names the path).
        ValueError: a line that is not a JSON object (names the path and line number).
    """
    path = _require(Path(run_dir) / METRICS_FILE, "metrics log")
    lines = path.read_text(encoding="utf-8").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records: List[Dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
        except ValueError as e:  # JSONDecodeError is a ValueError
            if i == last:
                warnings.warn(f"{path}:{i + 1}: skipping a truncated last line ({e})", stacklevel=2)
                continue
            raise ValueError(f"{str(path)!r} line {i + 1} is not a JSON object: {e}") from None
        records.append(rec)
    return records


def read_config(run_dir: PathLike) -> Dict[str, Any]:
    """The parsed ``<run_dir>/config.yaml`` (PyYAML ``safe_load``; an empty file gives ``{}``).

    Raises:
        RunFileError: the file does not exist (names the path).
        ValueError: the file is not a YAML mapping (names the path).
    """
    path = _require(Path(run_dir) / CONFIG_FILE, "run config")
    import yaml  # PyYAML comes with omegaconf; imported here so that the rest works without it

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{str(path)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a YAML mapping, got {type(data).__name__}")
    return data


@dataclass
class RunData:
    """Everything read from one run directory.

    Attributes:
        path: the run directory.
        summary: parsed summary.json.
        metrics: records of metrics.jsonl, in file order.
        config: parsed config.yaml, or None when the file is absent (it is optional for reports).
        config_text: the raw config.yaml text, or None.
    """

    path: Path
    summary: Dict[str, Any]
    metrics: List[Dict[str, Any]] = field(default_factory=list)
    config: Optional[Dict[str, Any]] = None
    config_text: Optional[str] = None

    @property
    def name(self) -> str:
        """``summary['name']``, else the directory name."""
        return str(self.summary.get("name") or self.path.name)

    @property
    def label(self) -> str:
        """The human label (``summary['label']``), else the method, else the run name."""
        return str(self.summary.get("label") or self.summary.get("method") or self.name)


def load_run(run_dir: PathLike, require_config: bool = False) -> RunData:
    """Read summary.json and metrics.jsonl (both required) and config.yaml (optional unless
    ``require_config``) of one run directory.

    Raises:
        RunFileError: a required file (or the directory) is missing; the message names the path.
        ValueError: a file that cannot be parsed (see the readers).
    """
    path = Path(run_dir)
    summary = read_summary(path)
    metrics = read_metrics(path)
    config = text = None
    if require_config or (path / CONFIG_FILE).is_file():
        config = read_config(path)
        text = (path / CONFIG_FILE).read_text(encoding="utf-8")
    return RunData(path=path, summary=summary, metrics=metrics, config=config, config_text=text)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def epoch_series(records: List[Dict[str, Any]], key: str) -> Tuple[List[int], List[float]]:
    """Per-epoch values of ``key`` in metrics.jsonl records: ``(epochs, values)``, epochs ascending.

    Records without ``key`` (or with a non-finite value, e.g. NaN before a NaN stop) are ignored.
    When a run was resumed, the steps it redid are logged twice: for a repeated ``step`` the
    later record wins. Several records of one epoch (e.g. per-step train losses) are averaged
    (mean over the logged steps of that epoch). Records without ``epoch`` count as epoch 0.
    """
    by_step: Dict[Any, Tuple[int, float]] = {}
    for i, rec in enumerate(records):
        v = rec.get(key)
        if not _is_number(v):
            continue
        step = rec.get("step", ("line", i))
        by_step[step] = (int(rec.get("epoch", 0)), float(v))  # later duplicates overwrite
    per_epoch: Dict[int, List[float]] = {}
    for epoch, v in by_step.values():
        per_epoch.setdefault(epoch, []).append(v)
    epochs = sorted(per_epoch)
    return epochs, [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs]


def noise_series(summary: Dict[str, Any]) -> Tuple[List[float], List[float]]:
    """``summary['noise_acc']`` ({"0.1": acc, ...}) as ``(sigmas ascending, accuracies)``.

    Missing/empty noise_acc gives two empty lists; keys that are not numbers raise ValueError
    naming the key.
    """
    raw = summary.get("noise_acc") or {}
    pairs = []
    for k, v in raw.items():
        try:
            s = float(k)
        except ValueError:
            raise ValueError(f"noise_acc key {k!r} is not a noise sigma (expected e.g. '0.1')") from None
        if _is_number(v):
            pairs.append((s, float(v)))
    pairs.sort()
    return [p[0] for p in pairs], [p[1] for p in pairs]
