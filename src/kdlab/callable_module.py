"""A module that can be called: ``kdlab.compare(...)`` and ``kdlab.export(...)`` are API functions whose names
are also subpackages (``kdlab.compare``, ``kdlab.export``). Importing a submodule sets the package attribute of
that name to the module, so the module itself must be the callable (Python allows a module's class to be a
``ModuleType`` subclass)."""
from __future__ import annotations

import sys
import types
from typing import Any, Callable


def make_callable(module_name: str, fn: Callable[..., Any]) -> None:
    """Calling module ``module_name`` calls ``fn`` (its docstring is ``fn``'s)."""

    class CallableModule(types.ModuleType):
        __call__ = staticmethod(fn)

    sys.modules[module_name].__class__ = CallableModule
