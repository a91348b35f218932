"""A spec's ``init`` runs: networks trained before the rows, whose run directories rows refer to.

Some protocols start every row from the same pre-trained weights (KDGAN's published code pre-trains every
player with cross entropy) or give each data budget its own teacher. A spec names such runs under
``init`` (or per scale, ``scales.<scale>.init``, which replaces the top-level one)::

    init:
      clf:                               # run <name>-init-clf[-<column>]-s<seed>
        set: [method=teacher, trainer.epochs=5, "model.kwargs.hidden=[800, 800]"]
        # recipe: kdgan_pretrain         # optional, under the sets
        # seed: 1                        # a fixed seed (default: the seed of the row that uses it)
        # per_column: false              # one run for every column (default: one per column, with its sets)
        # takes: [trainer., data.]       # the command line's key=value overrides it gets, by key prefix
        #                                # (default: all; a metric classifier has no generator eval keys)
        # callbacks: [{name: save-player, player: discriminator}]  # registered callbacks of its run
        #                                # (kdlab.compare.analyses)
    methods:
      - {label: KDGAN, set: [method=kdgan, model.checkpoint=@init:clf, players.disc_init=@init:d]}

A value ``@init:NAME`` in any ``key=value`` set of a row (its own, its column's, its scale's) becomes the
run directory of init ``NAME`` for that row's column and seed (``@init:NAME/file`` a file in it); an init's
own sets may refer to other inits (trained before it; a cycle is refused). Only the inits some row uses are
trained, each once, before the rows (after the teacher). An init's config: its recipe (if any), the spec's
``common``, its column's sets (``per_column``), its ``set``, then ``seed``, ``data.subset_seed`` (the
spec's ``subset_seed`` or the seed) and its name; the spec's ``student`` is not applied.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from kdlab.config import ConfigError

__all__ = ["InitRun", "parse_inits", "init_refs", "INIT_KEYS", "REF"]

#: the keys of one ``init`` entry
INIT_KEYS = ("recipe", "set", "seed", "per_column", "takes", "callbacks")
#: a reference to an init run inside a ``key=value`` set
REF = re.compile(r"@init:([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass
class InitRun:
    """One ``init`` entry (see the module docstring).

    Attributes:
        name: the name rows refer to (``@init:<name>``); letters, digits, ``._-``.
        recipe: a recipe name / YAML path under the sets, or None.
        set: its ``key=value`` sets.
        seed: a fixed seed, or None (the seed of the row that uses it).
        per_column: one run per column with the column's sets (True), or one for every column.
        takes: key prefixes of the command line's overrides this run gets (None: all of them).
        callbacks: registered callbacks of its run (:class:`kdlab.compare.analyses.CallbackUse`).
    """

    name: str
    recipe: Optional[str] = None
    set: List[str] = field(default_factory=list)
    seed: Optional[int] = None
    per_column: bool = True
    takes: Optional[List[str]] = None
    callbacks: List[Any] = field(default_factory=list)

    def extra(self, overrides: Sequence[str]) -> List[str]:
        """The command line's ``key=value`` overrides this run takes (:attr:`takes`)."""
        if self.takes is None:
            return list(overrides)
        return [o for o in overrides if any(o.split("=", 1)[0].startswith(p) for p in self.takes)]


def parse_inits(value: Any, where: str, str_list: Callable[[Any, str], List[str]]) -> Dict[str, InitRun]:
    """The ``init`` mapping name -> :class:`InitRun`.

    Raises:
        ConfigError: not a mapping, a bad name, an unknown key, a seed that is not an integer, a
            ``per_column`` that is not a boolean, an entry with neither recipe nor sets, a bad callback.
    """
    from kdlab.compare.analyses import parse_callbacks

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"compare spec key {where!r} must be a mapping name -> {{set: [...], seed: ..}}; got {value!r}")
    out = {}
    for name, entry in value.items():
        at = f"{where}.{name}"
        if not REF.fullmatch(f"@init:{name}"):
            raise ConfigError(f"{at}: name {name!r}: use letters, digits, '.', '_' or '-' (it is part of run names)")
        entry = entry if isinstance(entry, dict) else {"set": entry}
        bad = sorted(set(entry) - set(INIT_KEYS))
        if bad:
            raise ConfigError(f"{at}: unknown key {bad[0]!r}; accepted: {', '.join(INIT_KEYS)}")
        seed, per_column = entry.get("seed"), entry.get("per_column", True)
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ConfigError(f"{at}.seed = {seed!r}: accepted: an integer, or no seed (the row's)")
        if not isinstance(per_column, bool):
            raise ConfigError(f"{at}.per_column = {per_column!r}: accepted: true or false")
        sets = str_list(entry.get("set"), f"{at}.set")
        if not sets and not entry.get("recipe"):
            raise ConfigError(f"{at} needs a recipe or key=value sets (e.g. set: [method=teacher, trainer.epochs=5])")
        takes = entry.get("takes")
        if takes is not None and (not isinstance(takes, list) or not all(isinstance(t, str) and t for t in takes)):
            raise ConfigError(f"{at}.takes = {takes!r}: accepted: a list of key prefixes, e.g. [trainer., data.]")
        out[str(name)] = InitRun(str(name), entry.get("recipe"), sets, seed, per_column, takes,
                                 parse_callbacks(entry.get("callbacks"), f"{at}.callbacks"))
    return out


def init_refs(items: Sequence[str], inits: Dict[str, InitRun], where: str) -> List[str]:
    """The init names ``items`` (``key=value`` sets) refer to, in order, each once.

    Raises:
        ConfigError: a reference to an init the spec does not have (names the accepted ones).
    """
    names: List[str] = []
    for item in items:
        for name in REF.findall(item):
            if name not in inits:
                raise ConfigError(f"{where}: {item!r} refers to init {name!r}; accepted: "
                                  f"{', '.join(f'@init:{n}' for n in inits) or 'none (the spec has no init: section)'}")
            if name not in names:
                names.append(name)
    return names


def init_run_name(spec_name: str, init: InitRun, column: Optional[str], seed: int) -> str:
    """``<spec>-init-<name>[-<column>]-s<seed>``."""
    col = f"-{column.lower()}" if init.per_column and column is not None else ""
    return f"{spec_name}-init-{init.name}{col}-s{seed}"


def substitute(items: Sequence[str], paths: Dict[str, str]) -> List[str]:
    """``items`` with each ``@init:NAME`` replaced by ``paths[NAME]``."""
    return [REF.sub(lambda m: paths[m.group(1)], item) for item in items]


def with_row_sets(methods: Any, rows: Dict[str, Any], scale: str) -> Any:
    """A scale's per-row sets (``scales.<scale>.rows``: row name -> ``key=value`` list) appended to those
    rows' ``set`` in the raw ``methods`` list (settings of some rows that differ between scales).

    Raises:
        ConfigError: a row name no row of ``methods`` has (names the accepted ones), a value that is not a list.
    """
    if not rows:
        return methods
    raw = [dict(r) if isinstance(r, dict) else {"recipe": r} for r in methods or []]
    names = [str(r.get("name") or "") for r in raw]
    for name, sets in rows.items():
        if str(name) not in names:
            raise ConfigError(f"scales.{scale}.rows: no method row named {name!r}; accepted: "
                              f"{', '.join(n for n in names if n)}")
        if not isinstance(sets, (list, tuple)):
            raise ConfigError(f"scales.{scale}.rows.{name} must be a list of key=value strings; got {sets!r}")
        row = raw[names.index(str(name))]
        old = row.get("set") or []
        row["set"] = ([old] if isinstance(old, str) else list(old)) + list(sets)
    return raw
