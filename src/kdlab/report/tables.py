"""Markdown tables and number formatting for reports.

Spread over seeds is the SAMPLE standard deviation (``ddof=1``, as ``statistics.stdev``), written
``mean ± std``; a single value is written without ``±``.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, List, Optional, Sequence

__all__ = ["MISSING", "mean_std", "format_mean_std", "format_count", "markdown_table"]

MISSING = "—"  # shown for a value that a run did not record


def _clean(values: Iterable[Any]) -> List[float]:
    out = []
    for v in values:
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out.append(float(v))
    return out


def mean_std(values: Iterable[Any]) -> tuple[Optional[float], Optional[float], int]:
    """``(mean, sample std (ddof=1), n)`` of the finite numbers in ``values``.

    None/NaN entries are dropped (a run that did not record the value); std is None for n < 2 and
    mean is None for n = 0.
    """
    xs = _clean(values)
    if not xs:
        return None, None, 0
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def format_mean_std(values: Iterable[Any], digits: int = 2) -> str:
    """``"mean ± std"`` with ``digits`` decimals (sample std, ddof=1); one value -> ``"mean"``;
    no finite value -> :data:`MISSING`. E.g. ``[90.0, 92.0] -> "91.00 ± 1.41"``.
    """
    m, s, n = mean_std(values)
    if n == 0:
        return MISSING
    if s is None:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def format_count(n: Any, digits: int = 2) -> str:
    """A large count with an SI suffix (powers of 1000): 7840 -> "7.84K", 1276810 -> "1.28M".

    None/non-numbers give :data:`MISSING`; counts below 1000 are printed as integers.
    """
    if n is None or isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n):
        return MISSING
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.{digits}f}{suffix}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.{digits}f}"


def _cell(v: Any) -> str:
    s = MISSING if v is None else str(v)
    # a pipe would end the cell, a newline the row
    return s.replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], align: Optional[Sequence[str]] = None) -> str:
    """A GitHub-flavoured markdown table (ends with a newline).

    Args:
        headers: column titles.
        rows: one sequence of cells per row (None -> :data:`MISSING`); pipes in cells are escaped.
        align: per column ``"l"``, ``"r"`` or ``"c"``; default left for the first column, right
            for the others (numbers).

    Raises:
        ValueError: a row or ``align`` whose length differs from ``headers`` (names the lengths),
            or an alignment other than l/r/c.
    """
    k = len(headers)
    if align is None:
        align = ["l"] + ["r"] * (k - 1)
    if len(align) != k:
        raise ValueError(f"align has {len(align)} entries but there are {k} headers")
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    for a in align:
        if a not in marks:
            raise ValueError(f"alignment {a!r} is not one of 'l', 'r', 'c'")
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    for i, row in enumerate(rows):
        if len(row) != k:
            raise ValueError(f"row {i} has {len(row)} cells but there are {k} headers")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"
