"""User plugins: public registration decorators, the ``imports:`` config key, the ``kdlab.plugins`` entry points.

A plugin is any Python module that registers models, terms, methods or data sets with the decorators below.
It reaches a run three ways, all before the config is resolved (so its names pass the same checks as
kdlab's own):

* ``imports: [mypkg.models, ./my_terms.py]`` in a YAML config, or ``--import`` on the command line, or
  ``imports=[...]`` in :func:`kdlab.distill`: dotted module names (on ``sys.path``) or ``.py`` files
  (a relative path from the YAML file's folder when the file is there, else from the current directory);
* installed packages that declare an entry point in the group ``kdlab.plugins`` (loaded once, on the first
  config that is resolved).

The resolved config records each import as ``{module, file, sha256}`` (the file's hash), so a run directory
names the exact plugin code it ran with; a recorded hash that no longer matches the file is refused.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from kdlab.config import ConfigError

#: entry-point group through which installed packages register (``[project.entry-points."kdlab.plugins"]``)
ENTRY_POINT_GROUP = "kdlab.plugins"

_IMPORTED: Dict[str, Dict[str, str]] = {}  # resolved file -> its record: a file is executed once per process
_ENTRY_POINTS: Optional[List[Dict[str, str]]] = None


class PluginImportError(ConfigError):
    """A plugin listed in ``imports`` is missing or raised while importing: one kdlab line, then the user's
    traceback (it is their code)."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _failed(what: str, exc: BaseException) -> PluginImportError:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return PluginImportError(f"imports: {what} raised {type(exc).__name__} while importing (traceback of your "
                             f"module below)\n{tb.rstrip()}")


def is_path(entry: str) -> bool:
    """Whether an ``imports`` entry is a file path (ends in ``.py`` or has a separator), not a dotted name."""
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def import_plugin(entry: Any) -> Dict[str, str]:
    """Import one ``imports`` entry and return its record ``{"module", "file", "sha256"}``.

    Args:
        entry: a dotted module name, a ``.py`` path, or a record of an earlier run (``{module, file, sha256}``:
            the file is imported and its hash must still match).

    Raises:
        PluginImportError: no such module or file (names it and the two accepted forms); the module raised
            while importing (its traceback under one kdlab line); a recorded hash that differs from the file's.
    """
    want = None
    if isinstance(entry, dict) or hasattr(entry, "items"):
        rec = dict(entry)
        want = rec.get("sha256")
        entry = rec.get("file") if rec.get("module", "").startswith("kdlab_plugin_") or not rec.get("module") else rec["module"]
    if not isinstance(entry, str) or not entry.strip():
        raise PluginImportError(f"imports: entry {entry!r}; accepted: a dotted module name (mypkg.models) or a .py file")
    if is_path(entry):
        path = Path(entry).expanduser().resolve()
        if not path.is_file():
            raise PluginImportError(f"imports: file {entry!r} does not exist (looked at {str(path)!r}); accepted: a "
                                    f"dotted module name on sys.path or a .py file, relative to the current directory")
        key = str(path)
        if key not in _IMPORTED:
            name = f"kdlab_plugin_{path.stem}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[name]
                raise _failed(f"file {entry!r}", exc) from None
            _IMPORTED[key] = {"module": name, "file": key, "sha256": _sha256(path)}
        rec = _IMPORTED[key]
    else:
        try:
            module = importlib.import_module(entry)
        except ModuleNotFoundError as exc:
            if exc.name and entry.startswith(exc.name):  # the module itself is missing, not one it imports
                raise PluginImportError(f"imports: no module named {entry!r} ({exc.name!r} is not on sys.path); "
                                        f"accepted: a dotted module name on sys.path or a .py file") from None
            raise _failed(f"module {entry!r}", exc) from None
        except Exception as exc:
            raise _failed(f"module {entry!r}", exc) from None
        file = getattr(module, "__file__", None)
        rec = {"module": entry, "file": str(Path(file).resolve()) if file else "", "sha256": _sha256(Path(file)) if file else ""}
    if want and want != rec["sha256"]:
        raise PluginImportError(f"imports: {rec['file'] or rec['module']!r} has sha256 {rec['sha256']}, the config "
                                f"records {want}: the plugin changed since that run; list it by name to use the new code")
    return dict(rec)


def import_plugins(entries: Sequence[Any]) -> List[Dict[str, str]]:
    """:func:`import_plugin` of each entry, in order (duplicates once); returns their records."""
    out: List[Dict[str, str]] = []
    for e in entries or ():
        rec = import_plugin(e)
        if rec not in out:
            out.append(rec)
    return out


def load_entry_points() -> List[Dict[str, str]]:
    """Load every installed ``kdlab.plugins`` entry point once; returns ``{"entry_point", "module", "version"}`` each.

    Raises:
        PluginImportError: an entry point that raised while loading (names its package, with its traceback).
    """
    global _ENTRY_POINTS
    if _ENTRY_POINTS is None:
        from importlib.metadata import entry_points

        found = entry_points(group=ENTRY_POINT_GROUP) if sys.version_info >= (3, 10) else entry_points().get(ENTRY_POINT_GROUP, [])
        records = []
        for ep in found:
            try:
                ep.load()
            except Exception as exc:
                raise _failed(f"entry point {ep.name!r} ({ep.value}, group {ENTRY_POINT_GROUP})", exc) from None
            dist = getattr(ep, "dist", None)
            records.append({"entry_point": ep.name, "module": ep.value, "version": getattr(dist, "version", "") or ""})
        _ENTRY_POINTS = records
    return list(_ENTRY_POINTS)


# ----------------------------------------------------------------------------- registration decorators


def register_model(name: str, *, replace: bool = False) -> Callable:
    """Decorator: register a classifier class or factory under ``name`` (``model.name: <name>`` in YAML).

    The factory is called with those of ``num_classes``, ``in_channels``, ``image_size`` it takes (set from
    the data set) plus ``model.kwargs``; it returns any ``nn.Module`` mapping ``[B, C, S, S]`` to logits
    ``[B, K]`` (see :func:`kdlab.models.base.adopt`). An existing name (kdlab's or another plugin's) is refused unless
    ``replace=True``.

    Raises:
        ValueError: the name is taken and ``replace`` is False.
    """
    from kdlab.models import MODELS
    from kdlab.models.base import adopt

    def deco(factory: Callable) -> Callable:
        takes = inspect.signature(factory).parameters
        anything = any(p.kind is p.VAR_KEYWORD for p in takes.values())

        @functools.wraps(factory)
        def build(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, **kwargs: Any) -> Any:
            common = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
            net = factory(**{k: v for k, v in common.items() if anything or k in takes}, **kwargs)
            return adopt(net, name.lower(), kwargs, num_classes, in_channels, image_size)

        MODELS.register(name, help=(factory.__doc__ or "").strip().split("\n")[0] or f"plugin model {name}",
                        replace=replace)(build)
        return factory

    return deco


def _register_subclass(registry: Any, base: type, public: str, what: str, name: str, replace: bool) -> Callable:
    """A decorator registering a subclass of ``base`` (``public``: its public path) in ``registry`` under ``name``."""
    def deco(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"register_{what}({name!r}): {cls!r} is not a subclass of {public}")
        return registry.register(name, replace=replace)(cls)

    return deco


def register_term(name: str, *, replace: bool = False) -> Callable:
    """Decorator: register a :class:`kdlab.terms.Term` subclass under ``name`` (``objective.<player>.<name>``).

    Raises:
        TypeError: not a ``Term`` subclass. ValueError: the name is taken and ``replace`` is False.
    """
    from kdlab.terms import TERMS, Term

    return _register_subclass(TERMS, Term, "kdlab.terms.Term", "term", name, replace)


def register_method(name: str, *, replace: bool = False) -> Callable:
    """Decorator: register a :class:`kdlab.methods.Method` subclass under ``name`` (``method: <name>``).

    Raises:
        TypeError: not a ``Method`` subclass. ValueError: the name is taken and ``replace`` is False.
    """
    from kdlab.methods import METHODS, Method

    return _register_subclass(METHODS, Method, "kdlab.methods.Method", "method", name, replace)


def register_dataset(name: str, *, num_classes: int, in_channels: int, image_size: int,
                     mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                     class_names: Optional[Sequence[str]] = None, hflip: bool = True, replace: bool = False) -> Callable:
    """Decorator: register a data set under ``name`` (``data.name: <name>``).

    The decorated ``load(split, root, download)`` returns, for ``split`` in ``"train"``/``"test"``, either
    ``(images uint8 [N, C, S, S], labels int [N])`` or a ``torch.utils.data.Dataset`` of (image, label)
    (:func:`kdlab.data.user.materialize`). ``mean``/``std`` (per channel, [0, 1] units) default to 0.5.

    Raises:
        ValueError: the name is taken and ``replace`` is False; mean/std of another length than C.
    """
    from kdlab.data.user import register_loader

    def deco(load: Callable) -> Callable:
        register_loader(name, load, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                        mean=mean, std=std, class_names=class_names, hflip=hflip, replace=replace,
                        help=(load.__doc__ or "").strip().split("\n")[0] or f"plugin data set {name}")
        return load

    return deco
