"""A name -> factory registry with errors that list the accepted names.

Every extensible family in kdlab (models, data sets, losses, methods) is a :class:`Registry`;
entries are added with the :meth:`Registry.register` decorator (the torchdistill pattern) and
looked up by name. This module imports nothing from kdlab, so every layer may use it.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'kd'?)"`` for the closest of ``choices`` to a misspelt ``word``, else ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def slug(text: str) -> str:
    """``"My_Net2"`` -> ``"my-net2"``: lower-case letters and digits joined by ``-`` (a name part in a registry)."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


class UnknownNameError(KeyError):
    """Raised for a name that a registry does not hold; the message lists the accepted names."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class UnknownArgumentError(TypeError, ValueError):
    """A keyword argument that a registry entry does not take (e.g. ``model.kwargs.foo``); the message
    names it and the accepted ones. A ``TypeError`` as Python raises for a bad keyword, and a
    ``ValueError`` because it is the user's input, not a bug, that is wrong."""


class Registry:
    """A mapping from a lower-case name to an object (usually a class or factory).

    Args:
        kind: what the entries are ("model", "method", ...), used in error messages.

    Raises:
        ValueError: on registering the same name twice.
        UnknownNameError: on looking up a name that is not registered (lists the known ones).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, Any] = {}
        self._help: Dict[str, str] = {}

    def register(self, name: str, help: Optional[str] = None, replace: bool = False) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (case-insensitive); an existing name is refused
        unless ``replace`` (a plugin that deliberately overrides a built-in entry)."""

        def deco(obj: T) -> T:
            key = name.lower()
            if key in self._entries and not replace:
                raise ValueError(f"{self.kind} {name!r} is registered twice (already: {self._entries[key]!r}); "
                                 f"pass replace=True to override it")
            self._entries[key] = obj
            doc = help or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
            self._help[key] = doc
            return obj

        return deco

    def add(self, name: str, obj: Any, help: Optional[str] = None, replace: bool = False) -> None:
        """Register ``obj`` under ``name`` without a decorator."""
        self.register(name, help, replace)(obj)

    def get(self, name: str) -> Any:
        """Return the entry for ``name``; raise :class:`UnknownNameError` naming the known ones."""
        key = str(name).lower()
        if key not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}{did_you_mean(key, self._entries)}; "
                                   f"known {self.kind}s: {known}")
        return self._entries[key]

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def describe(self) -> Dict[str, str]:
        """Name -> one-line description (first docstring line), for ``kdlab list``."""
        return {k: self._help[k] for k in self.names()}

    def __contains__(self, name: object) -> bool:
        return str(name).lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
