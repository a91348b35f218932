"""A spec's ``callbacks``: registered engine callbacks attached to its runs, and the metrics they add.

What an experiment measures beyond a run's summary (a gradient's variance, a player's accuracy during the
game) is a small *analysis*: an engine callback (:mod:`kdlab.engine.callbacks`) registered in
:data:`CALLBACKS` under a name, with the metrics it produces. A spec attaches callbacks by name::

    callbacks: [{name: kdgan-teacher-trace, every: 20}]  # every row's runs; settings: the keyword arguments
                                                        # (a bare name where every setting has a default)
    methods:
      - {label: A, set: [...], callbacks: [{name: kdgan-teacher-trace, offset: 40}]}  # this row's: merged over
                                                        # the spec's entry of the same name (or its own callback)
    init: {warm: {set: [...], callbacks: [{name: save-player, player: discriminator}]}}  # an init run's
    scales: {small: {callbacks: [{name: kdgan-teacher-trace, every: 20}]}}  # replaces the spec's list

An :class:`AnalysisCallback` collects a trace during the run and, at its end (rank 0), writes
``<run>/analysis/<name>[-<key><value>...].json`` = ``{"callback", "settings", "metrics", "trace"}`` (its
settings in the file name). A finished run is reused only if it holds the files its callbacks write (their
``outputs``: an analysis' file, :class:`SavePlayer`'s weights), so a run traced with other settings trains
again. The scalar ``metrics`` join the run's record in the report's results.json (``runs[].analysis``; per row
``analysis``: mean ± std over seeds), the report shows them in a table and plots the registered traces, and a
comparison names one as its ``metric`` like any other. Refused before anything trains, naming what is accepted:
an unknown callback or setting, a setting that is not a number, string or boolean or that the callback refuses,
a callback listed twice, two callbacks of a row writing one metric, a compared metric none of a row's
callbacks writes.
"""
from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from kdlab.config import ConfigError
from kdlab.engine.callbacks import Callback, PlayersView
from kdlab.registry import Registry

__all__ = ["CALLBACKS", "Registered", "register_callback", "CallbackUse", "AnalysisCallback", "SavePlayer",
           "parse_callbacks", "merge_callbacks", "cell_callbacks", "read_analysis", "read_trace", "ANALYSIS_DIR"]

#: name -> :class:`Registered`
CALLBACKS = Registry("callback")
#: where analyses write, relative to the run directory
ANALYSIS_DIR = "analysis"
_SAFE = re.compile(r"[^A-Za-z0-9.+-]+")


@dataclass(frozen=True)
class Registered:
    """A registered callback: ``factory(**settings) -> Callback``; ``metrics``: the scalars it writes;
    ``trace``: ``(x key, y keys)`` of its trace rows that the report plots (None: no plot)."""

    factory: Callable[..., Callback]
    metrics: Tuple[str, ...] = ()
    trace: Optional[Tuple[str, Tuple[str, ...]]] = None


def register_callback(name: str, metrics: Sequence[str] = (), trace: Optional[Tuple[str, Sequence[str]]] = None,
                      help: Optional[str] = None) -> Callable[[Any], Any]:
    """Decorator registering a callback factory (a class or function) under ``name``."""
    from kdlab.compare.claims import METRICS

    clash = sorted(set(metrics) & {m for ms in METRICS.values() for m in ms})
    if clash:
        raise ValueError(f"callback {name!r}: metric {clash[0]!r} is a run metric already; name it otherwise")

    def deco(factory: Any) -> Any:
        doc = help or (factory.__doc__ or "").strip().split("\n")[0]
        CALLBACKS.add(name, Registered(factory, tuple(metrics), (trace[0], tuple(trace[1])) if trace else None), doc)
        return factory

    return deco


def _registered(name: str) -> Registered:
    import kdlab.experiments  # noqa: F401  (registers the experiments' callbacks)

    return CALLBACKS.get(name)


@dataclass
class CallbackUse:
    """One callback of a row or init run: its registered ``name`` and ``settings`` (keyword arguments)."""

    name: str
    settings: Dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> Tuple[str, ...]:
        return _registered(self.name).metrics

    @property
    def file(self) -> str:
        """The analysis file, relative to the run directory (the settings in its name)."""
        tail = "".join(f"-{_SAFE.sub('_', str(k))}{_SAFE.sub('_', str(v))}" for k, v in sorted(self.settings.items()))
        return f"{ANALYSIS_DIR}/{self.name}{tail}.json"

    def build(self) -> Callback:
        """A fresh callback (one per run: it holds the run's trace)."""
        cb = _registered(self.name).factory(**self.settings)
        if isinstance(cb, AnalysisCallback):
            cb.callback, cb.file, cb.settings = self.name, self.file, dict(self.settings)
        return cb


def cell_callbacks(uses: Sequence[CallbackUse]) -> Dict[str, Any]:
    """``callbacks`` and ``needs`` of :func:`kdlab.experiments.grid.run_cell` for a cell's callbacks ({} for none)."""
    if not uses:
        return {}
    built = [u.build() for u in uses]
    return {"callbacks": built, "needs": [f for cb in built for f in getattr(cb, "outputs", ())]}


class AnalysisCallback(Callback):
    """Base of an analysis: rows appended to :attr:`trace` during the run, :meth:`metrics` its scalars; at the
    end of the run (rank 0) both are written to ``run_dir/<file>`` (``file``, ``callback``, ``settings``: set by
    :meth:`CallbackUse.build`). A subclass that records at the end calls ``super().on_fit_end(view)`` last."""

    callback, file, settings = "analysis", f"{ANALYSIS_DIR}/analysis.json", {}  # set by CallbackUse.build

    def __init__(self) -> None:
        self.trace: List[Dict[str, Any]] = []

    @property
    def outputs(self) -> List[str]:
        return [self.file]

    def metrics(self) -> Dict[str, float]:
        """The run's scalars (the registered metric names); computed from :attr:`trace` at the end."""
        return {}

    def on_fit_end(self, view: PlayersView) -> None:
        from kdlab.engine import atomic_write_text

        if view.run_dir is not None:
            body = {"callback": self.callback, "settings": self.settings, "metrics": self.metrics(), "trace": self.trace}
            atomic_write_text(view.run_dir / self.file, json.dumps(body, indent=1) + "\n")


@register_callback("save-player", help="save a player at the end of the run as <run>/<file> (e.g. d after a warm-up)")
class SavePlayer(Callback):
    """At the end of the run (rank 0): player ``player`` saved as a kdlab classifier file ``run_dir/<file>``
    (default ``<player>.safetensors``), e.g. d after a warm-up, so that a later run starts from it
    (``players.disc_init=@init:warm/discriminator.safetensors``). The player must be a registry classifier."""

    def __init__(self, player: str, file: Optional[str] = None) -> None:
        self.player, self.file = str(player), str(file or f"{player}.safetensors")
        self.outputs = [self.file]

    def on_fit_end(self, view: PlayersView) -> None:
        from kdlab.engine import save_classifier

        if view.run_dir is not None:
            save_classifier(view.module(self.player).copy().cpu(), view.run_dir / self.file, data=view.cfg.data.name)


def parse_callbacks(value: Any, where: str, complete: bool = True) -> List[CallbackUse]:
    """A ``callbacks`` list: names or ``{name: NAME, <setting>: <value>, ...}`` mappings; ``complete=False``
    (a row's, merged over the spec's by :func:`merge_callbacks`): the settings may lack required ones.

    Raises:
        ConfigError: not a list; an entry without a name; an unknown callback (lists the registered ones); the
            same callback twice; a setting the callback does not take (lists its settings) or that is not a
            number, string or boolean; a bad setting value (the callback's own message).
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where} = {value!r}: accepted: a list of callback names or {{name: NAME, setting: value}}")
    import kdlab.experiments  # noqa: F401  (registers the experiments' callbacks)

    out: List[CallbackUse] = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        item = {"name": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{at} = {item!r}: accepted: a callback name or {{name: NAME, setting: value}}")
        name, settings = item["name"], {k: v for k, v in item.items() if k != "name"}
        if name.lower() not in CALLBACKS:
            raise ConfigError(f"{at}: unknown callback {name!r}; accepted: {', '.join(CALLBACKS.names()) or 'none'}")
        if any(u.name == name.lower() for u in out):
            raise ConfigError(f"{at}: callback {name!r} is listed twice; give it once (with all its settings)")
        out.append(_checked(CallbackUse(name.lower(), settings), at, complete))
    return out


def _checked(use: CallbackUse, at: str, complete: bool = True) -> CallbackUse:
    """``use`` once its settings are the callback's (and, ``complete``, build it)."""
    params = inspect.signature(_registered(use.name).factory).parameters
    accepted = [p for p in params if p != "self"]
    for k, v in use.settings.items():
        if k not in accepted:
            raise ConfigError(f"{at}: callback {use.name!r} has no setting {k!r}; accepted: "
                              f"{', '.join(accepted) or 'none'}")
        if not isinstance(v, (int, float, str, bool)):
            raise ConfigError(f"{at}.{k} = {v!r}: accepted: a number, a string or a boolean")
    try:
        if complete:
            use.build()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{at}: callback {use.name!r}: {exc}; settings: {', '.join(accepted) or 'none'}") from None
    return use


def merge_callbacks(spec: Sequence[CallbackUse], row: Sequence[CallbackUse], where: str) -> List[CallbackUse]:
    """A row's callbacks: the spec's, each with the row's entry of the same name merged over its settings, then
    the row's others.

    Raises:
        ConfigError: two of them write the same metric (names both callbacks and the metric).
    """
    mine = {u.name: u for u in row}
    out = [CallbackUse(u.name, {**u.settings, **mine.pop(u.name).settings}) if u.name in mine else u
           for u in spec] + list(mine.values())
    out = [_checked(u, f"{where}: callbacks") for u in out]
    seen: Dict[str, str] = {}
    for u in out:
        for m in u.metrics:
            if m in seen:
                raise ConfigError(f"{where}: callbacks {seen[m]!r} and {u.name!r} both write metric {m!r}; keep one")
            seen[m] = u.name
    return out


def read_analysis(run: Path, uses: Sequence[CallbackUse]) -> Dict[str, Any]:
    """The metrics the callbacks ``uses`` wrote in finished run ``run``: metric -> number, None where a file or
    a metric is missing or not finite."""
    out: Dict[str, Any] = {}
    for u in uses:
        path = Path(run) / u.file
        try:
            got = json.loads(path.read_text(encoding="utf-8")).get("metrics") or {} if path.is_file() else {}
        except (OSError, ValueError):
            got = {}
        for m in u.metrics:
            v = got.get(m)
            out[m] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
    return out


def read_trace(run: Path, use: CallbackUse) -> List[Dict[str, Any]]:
    """The trace rows the analysis ``use`` wrote in finished run ``run`` ([] without its file)."""
    path = Path(run) / use.file
    try:
        return list(json.loads(path.read_text(encoding="utf-8")).get("trace") or []) if path.is_file() else []
    except (OSError, ValueError):
        return []
