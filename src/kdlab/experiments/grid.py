"""The grid runner shared by every ``kdlab reproduce`` experiment and by ``kdlab demo``.

An experiment is a grid of *cells*; a cell is one ordinary run (``runs/<name>/``, the run-directory
contract of DESIGN.md) given by config sources and ``key=value`` overrides. :func:`run_cell` resolves
the config and trains it, unless the run directory already holds a finished run of exactly that
config (its ``config.yaml`` equals the resolved config, up to how ``out_dir`` is spelled, and its
``summary.json`` exists): then that run
is reused, so an interrupted or extended grid only trains what is missing, and a changed config
(another override, another kdlab default) is trained again under the same name (the old run is moved
aside to ``<name>.old-<timestamp>``, as ``--overwrite`` does). A run of exactly that config that was
interrupted (``checkpoints/last.ckpt``, no ``summary.json``: a killed or preempted job) is resumed from
its last checkpoint (``--resume``; callbacks see the resumed run), unless the cell ``needs`` files its
callbacks write over the whole run.
Inside :func:`launched_by` (``--launcher submitit``) a cell that is not reused is handed to the launcher,
which runs :func:`run_cell` elsewhere (a submitted job).

Reports: :func:`read_summary` reads a cell's ``summary.json``, :func:`mean_std_text` formats a cell
of a table as ``mean ± sample std`` over seeds, :func:`mean` is the plain mean (plots, orderings),
:func:`write_report` writes ``<out>/report.md`` (and ``results.json``).

Tests replace :data:`train` (``monkeypatch.setattr(grid, "train", fake)``) to walk a whole grid
without training.
"""
from __future__ import annotations

import contextlib
import copy
import json
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from kdlab.config import to_yaml
from kdlab.report import format_mean_std
from kdlab.report import read_summary as _read_summary
from kdlab.runner import load_run_config, train

__all__ = ["RECIPES", "recipe", "resolve", "same_config", "finished_run", "interrupted_run", "launched_by", "run_cell", "read_summary",
           "mean_std_text", "mean", "write_report"]

#: the packaged recipes (``kdlab list recipes``)
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def recipe(name: str) -> Path:
    """The path of the packaged recipe ``name`` (``"jacobian_teacher"`` -> ``.../recipes/jacobian_teacher.yaml``)."""
    return RECIPES / f"{name}.yaml"


def resolve(sources: Sequence[Any], overrides: Sequence[str] = ()) -> Any:
    """The fully resolved run config of a cell (:func:`kdlab.runner.load_run_config`).

    Args:
        sources: YAML paths and/or config dicts, merged left to right.
        overrides: ``key=value`` strings applied last.

    Raises:
        kdlab.config.ConfigError: as :func:`kdlab.runner.load_run_config` (unknown keys, old flat
            ``loss.<key>`` spellings with their new ``objective.student.<term>.<key>``, bad values).
    """
    return load_run_config(list(sources), list(overrides))


def respelled(cfg: Any, old: str, new: str) -> Any:
    """A copy of ``cfg`` with every string value that is the path ``old`` or lies under it (``old/...``: the
    run folder, init checkpoints and extractors in it) spelled from ``new`` instead."""
    old, new = old.rstrip("/") or old, new.rstrip("/") or new
    out = copy.deepcopy(cfg)

    def walk(node: Any) -> None:
        for key in list(node.keys()) if isinstance(node, DictConfig) else range(len(node)):
            try:
                value = node[key]
            except OmegaConfBaseException:  # a missing value ('???'): nothing to respell
                continue
            if isinstance(value, (DictConfig, ListConfig)):
                walk(value)
            elif isinstance(value, str) and (value.rstrip("/") == old or value.startswith(old + "/")):
                node[key] = new + value.rstrip("/")[len(old):]

    with read_write(out), open_dict(out):
        walk(out)
    return out


def same_config(saved: str, cfg: Any) -> bool:
    """Whether ``saved`` (a run's ``config.yaml`` text) is ``to_yaml(cfg)``, up to how ``out_dir`` is spelled:
    a run made with ``out_dir: runs`` is the run asked for with ``/abs/path/runs`` (and the other way round)
    when both name the same folder from the current directory, the paths under it included (init
    checkpoints). A relative ``out_dir`` saved elsewhere names another folder from here, so it does not match.
    """
    if saved == to_yaml(cfg):
        return True
    try:
        loaded = yaml.safe_load(saved)
    except yaml.YAMLError:
        return False
    saved_out = loaded.get("out_dir") if isinstance(loaded, dict) else None
    if not isinstance(saved_out, str) or saved_out == cfg.out_dir or not saved_out:
        return False
    if Path(saved_out).resolve() != Path(cfg.out_dir).resolve():
        return False
    return saved == to_yaml(respelled(cfg, cfg.out_dir, saved_out))


def finished_run(cfg: Any) -> Optional[Path]:
    """``out_dir/name`` when it holds a finished run of exactly ``cfg`` (``summary.json`` present and
    ``config.yaml`` equal to ``to_yaml(cfg)`` up to the spelling of ``out_dir``: :func:`same_config`), else None."""
    run_dir = Path(cfg.out_dir) / cfg.name
    cfg_file = run_dir / "config.yaml"
    if (run_dir / "summary.json").is_file() and cfg_file.is_file() and same_config(cfg_file.read_text(), cfg):
        return run_dir
    return None


def interrupted_run(cfg: Any) -> Optional[Path]:
    """``out_dir/name`` when it holds an interrupted run of exactly ``cfg`` (``checkpoints/last.ckpt``, no
    ``summary.json``, ``config.yaml`` equal to ``to_yaml(cfg)``, ``out_dir`` spelled the same: resuming checks the
    config text itself), else None."""
    run_dir = Path(cfg.out_dir) / cfg.name
    cfg_file = run_dir / "config.yaml"
    if ((run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "summary.json").exists()
            and cfg_file.is_file() and cfg_file.read_text() == to_yaml(cfg)):
        return run_dir
    return None


#: set by :func:`launched_by`: trains a cell elsewhere, ``launch(cfg, sources, overrides, callbacks, needs) -> Path``
_LAUNCH: List[Callable[..., Path]] = []


@contextlib.contextmanager
def launched_by(launch: Callable[..., Path]) -> Iterator[None]:
    """Within this block, :func:`run_cell` hands each cell it does not reuse to ``launch`` (e.g.
    :func:`kdlab.compare.launch.cell_launcher`: one submitit job per cell) instead of training it here."""
    _LAUNCH.append(launch)
    try:
        yield
    finally:
        _LAUNCH.remove(launch)


def run_cell(sources: Sequence[Any], overrides: Sequence[str] = (), console: Optional[Console] = None,
             callbacks: Sequence[Any] = (), needs: Sequence[str] = ()) -> Path:
    """Run one cell of a grid: resolve its config, reuse the finished run of that config, resume an
    interrupted run of it (unless it ``needs`` files) or train it (with ``overwrite``: another run under the same name
    is moved aside); inside :func:`launched_by`, the launcher trains it.

    Args:
        sources: YAML paths (e.g. :func:`recipe`) and/or config dicts, merged left to right.
        overrides: ``key=value`` strings applied last.
        console: where to say which run is reused or started (default: a console on stderr).
        callbacks: :class:`kdlab.engine.callbacks.Callback` s of the training (diagnostic traces); they
            run only when the cell is trained, so a cell whose callbacks write files lists them in ``needs``.
        needs: files (relative to the run directory) a finished run must also hold to be reused (e.g. the
            trace a callback writes, its settings in the file name); a run without them is trained again.

    Returns:
        The run directory ``out_dir/name``.

    Raises:
        kdlab.config.ConfigError: an invalid config (before anything is trained).
        Anything :func:`kdlab.runner.train` raises (e.g. a NaN loss, missing data).
    """
    cfg = resolve(sources, overrides)
    console = console if console is not None else Console(stderr=True)
    done = finished_run(cfg)
    if done is not None and all((done / n).is_file() for n in needs):
        console.print(f"[bold]{cfg.name}[/]: reusing the finished run in {done}")
        return done
    if _LAUNCH:
        return _LAUNCH[-1](cfg, sources, overrides, callbacks, needs)
    if not needs and interrupted_run(cfg) is not None:
        console.rule(f"{cfg.name}: {cfg.label} (resumed from its last checkpoint)")
        return train(cfg, resume=True, **({"callbacks": list(callbacks)} if callbacks else {}))
    console.rule(f"{cfg.name}: {cfg.label}")
    if (Path(cfg.out_dir) / cfg.name).exists():
        # an experiment owns its cells: a run of another config (or an interrupted one) is moved aside.
        # The keywords only when needed: stand-ins for train (tests) may take the config alone.
        return train(cfg, overwrite=True, **({"callbacks": list(callbacks)} if callbacks else {}))
    return train(cfg, **({"callbacks": list(callbacks)} if callbacks else {}))


def read_summary(run: Path) -> Dict[str, Any]:
    """The parsed ``<run>/summary.json`` of a finished cell (:func:`kdlab.report.read_summary`).

    Raises:
        kdlab.report.RunFileError: no such file (names the path).
    """
    return _read_summary(run)


def mean_std_text(values: Iterable[Any]) -> str:
    """A report cell over seeds: ``"mean ± std"`` (sample std, 2 decimals), one value alone, ``"—"``
    when no value is finite (None/NaN dropped; :func:`kdlab.report.format_mean_std`)."""
    return format_mean_std(values)


def mean(values: Sequence[float]) -> Optional[float]:
    """The arithmetic mean of ``values`` (``statistics.mean``), None for no values (plots skip it)."""
    return statistics.mean(values) if len(values) else None


def write_report(out: Path, title: str, lines: List[str], results: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``out/report.md`` (``# title``, a blank line, then ``lines``) and, when ``results`` is given,
    ``out/results.json`` (atomically); returns the report's path."""
    from kdlab.engine import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if results is not None:
        atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    report = out / "report.md"
    atomic_write_text(report, f"# {title}\n\n" + "\n".join(lines) + "\n")
    return report
