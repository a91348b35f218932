"""A spec's ``columns:``: every row once per column, with the column's sets, rows and seeds.

A column is a list of ``key=value`` sets, or a mapping::

    columns:
      ood:                                  # a column name (part of run names: letters, digits, '.-')
        set: [data.transfer_n=4000]         # sets of every row in this column (before the row's own)
        rows: {kd: [trainer.epochs=10]}     # sets of some rows in this column only (after the row's own)
        only: [kd, mosaickd]                # the rows this column holds (default: every row)
        seeds: [0]                          # this column's seeds (default: the spec's)

``only`` lets rows that do not depend on a column's setting (e.g. data-free baselines beside
per-source columns) run once, in a column of their own; a comparison then takes its ``b`` row from that
column with ``b_column`` (:func:`kdlab.compare.claims.parse_comparisons`). ``seeds`` lets a column of
single-seed ablations sit beside columns of paired comparisons (a declared comparison still needs at
least 2 seeds in both of its rows).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from kdlab.compare.claims import find_row
from kdlab.config import ConfigError

__all__ = ["Column", "COLUMN_KEYS", "parse_columns", "column_slug", "check_comparison_rows"]

#: the keys of a column given as a mapping
COLUMN_KEYS = ("set", "rows", "only", "seeds")


@dataclass
class Column:
    """One parsed column.

    Attributes:
        set: ``key=value`` sets of every row in it.
        rows: row name (slug) -> that row's sets in this column.
        only: the row names (slugs) it holds, in the spec's row order (None: every row).
        seeds: its seeds (None: the spec's).
    """

    set: List[str] = field(default_factory=list)
    rows: Dict[str, List[str]] = field(default_factory=dict)
    only: Optional[List[str]] = None
    seeds: Optional[List[int]] = None


def column_slug(slug: str, column: Optional[str]) -> str:
    """The run-name part of row ``slug`` in ``column`` (``kd`` in ``ood`` -> ``kd-ood``)."""
    return slug if column is None else f"{slug}-{column.lower()}"


def parse_columns(value: Any, rows: Sequence[Any], str_list: Any, seeds: Any, slugify: Any) -> Dict[str, Column]:
    """The ``columns`` mapping: column name -> :class:`Column`.

    Args:
        value: the spec's ``columns`` (None: no columns).
        rows: the spec's rows before expansion (each with ``label`` and ``slug``).
        str_list, seeds, slugify: the spec's parsers of ``key=value`` lists and seed lists, and its
            run-name form of a name (passed in: :mod:`kdlab.compare.spec` imports this module).

    Raises:
        ConfigError: not a mapping; a bad column name; an unknown key (accepted: :data:`COLUMN_KEYS`);
            a row of ``rows``/``only`` that does not exist; a row in ``rows`` that ``only`` leaves out;
            an empty ``only``; bad seeds.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"compare spec key 'columns' must be a mapping; got {value!r}")
    out: Dict[str, Column] = {}
    for name, entry in value.items():
        where, entry = f"columns.{name}", entry if isinstance(entry, dict) else {"set": entry}
        if slugify(str(name)) != str(name).lower():
            raise ConfigError(f"columns: name {name!r}: use letters, digits, '.' or '-' (it is part of run names)")
        bad = sorted(set(entry) - set(COLUMN_KEYS))
        if bad:
            raise ConfigError(f"{where}: unknown key {bad[0]!r}; accepted: {', '.join(COLUMN_KEYS)} "
                              "(or a list of key=value sets)")
        per_row = entry.get("rows") or {}
        if not isinstance(per_row, dict):
            raise ConfigError(f"{where}.rows must be a mapping row -> key=value sets; got {per_row!r}")
        col = Column(set=str_list(entry.get("set"), where),
                     rows={find_row(r, rows, f"{where}.rows").slug: str_list(v, f"{where}.rows.{r}")
                           for r, v in per_row.items()})
        if entry.get("only") is not None:
            only = entry["only"]
            if not isinstance(only, list) or not only:
                raise ConfigError(f"{where}.only = {only!r}: accepted: a non-empty list of row names")
            wanted = {find_row(r, rows, f"{where}.only").slug for r in only}
            col.only = [r.slug for r in rows if r.slug in wanted]
            left = sorted(set(col.rows) - wanted)
            if left:
                raise ConfigError(f"{where}.rows sets row {left[0]!r}, which {where}.only leaves out; "
                                  f"accepted: {', '.join(col.only)}")
        if entry.get("seeds") is not None:
            col.seeds = seeds(entry["seeds"], f"{where}.seeds")
        out[str(name)] = col
    return out


def check_comparison_rows(comparisons: Sequence[Any], rows: Sequence[Any], seeds: Sequence[int]) -> None:
    """Every declared comparison names rows the expanded spec holds, each with at least 2 seeds.

    Args:
        comparisons: :class:`kdlab.compare.claims.Comparison` s (expanded row names).
        rows: the expanded rows (each with ``slug`` and ``seeds``: None = the spec's ``seeds``).

    Raises:
        ConfigError: a row a column's ``only`` leaves out, or one whose column has fewer than 2 seeds.
    """
    by_slug = {r.slug: r for r in rows}
    for c in comparisons:
        for side in (c.a, c.b):
            if side not in by_slug:
                raise ConfigError(f"{c.kind} comparison {c.label!r}: no row {side!r} (a column's 'only:' leaves it "
                                  f"out); accepted: {', '.join(by_slug)}")
            n = len(by_slug[side].seeds or seeds)
            if n < 2:
                raise ConfigError(f"{c.kind} comparison {c.label!r}: row {side!r} runs {n} seed(s); a paired test "
                                  "needs at least 2: give its column 2 or more seeds")
