"""Student-objective terms: one registered class per term, composable in every method.

``kdlab list terms`` lists them with their keys. A method's ``objective.student`` section names the terms
and their settings, e.g. ``{ce: {weight: 1}, kd: {weight: 1, temperature: 4}}``; :func:`build_objective`
builds them. Every module of this package is imported here, so a new term is one new file.
"""
import importlib
import pkgutil

from kdlab.terms.base import (CAPABILITIES, OUTPUT, TERMS, CriticView, Outputs, Term, TermConfig, TermContext, layer_pairs,
                              output_shape, pick)
from kdlab.terms.objective import Objective, Student, build_objective, legacy_spelling, term_config

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "objective"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["CAPABILITIES", "OUTPUT", "TERMS", "CriticView", "output_shape", "pick", "Objective", "Outputs", "Student", "Term", "TermConfig", "TermContext",
           "build_objective", "layer_pairs", "legacy_spelling", "term_config"]
