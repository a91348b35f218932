"""The config reference of the docs, generated from the config dataclasses when the site is built.

:func:`config_reference` lists, per section of a run config (:class:`kdlab.config.RunConfig` and its
sections), per method (its ``players`` schema ``Config`` and its ``eval`` schema ``Eval``) and per term
(its ``Config``), every key with its type, default, accepted values (the ``choice`` / ``bounded``
metadata of :mod:`kdlab.config_fields`) and its help: the metadata's ``help``, else the comments above and beside
the field in the source. Nothing it writes is committed: the
docs hook (``docs/hooks.py``) calls it on every build.
"""
from __future__ import annotations

import inspect
import io
import tokenize
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import fields, is_dataclass
from typing import Any, Dict, Iterator, List, Tuple

from kdlab.config import EvalConfig, RunConfig
from kdlab.methods import METHODS
from kdlab.report.tables import markdown_table
from kdlab.terms import TERMS

__all__ = ["config_reference", "field_rows", "source_comments"]

_HEAD = ["Key", "Type", "Default", "Accepted", "Help"]


def source_comments(cls: type) -> Dict[str, str]:
    """Field name -> the comment lines just above its line in ``cls``'s source followed by the comment beside
    it (continued on the comment lines below while a parenthesis is open); empty when the source cannot be read."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    lines = src.splitlines()
    comments: Dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        return {}
    names = {f.name for f in fields(cls)} if is_dataclass(cls) else set()
    out: Dict[str, str] = {}
    used: set = set()  # comment lines that continue a field's trailing comment
    for i, line in enumerate(lines, 1):
        head = line.strip().split(":", 1)[0]
        if head not in names or head in out or ":" not in line:
            continue
        text = comments.get(i) if not line.strip().startswith("#") else None
        j = i + 1  # a trailing comment whose parenthesis closes on the comment lines below
        while text and text.count("(") > text.count(")") and j <= len(lines) and lines[j - 1].strip().startswith("#"):
            text += " " + comments.get(j, "")
            used.add(j)
            j += 1
        above, j = [], i - 1  # and the comment lines just above
        while j >= 1 and lines[j - 1].strip().startswith("#") and j not in used:
            above.insert(0, comments.get(j, ""))
            j -= 1
        out[head] = " ".join(above + [text or ""]).strip()
    return out


def _yaml(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_yaml(x)}" for k, x in v.items()) + "}"
    return str(v)


def _accepted(meta: Any) -> str:
    if "choices" in meta:
        return "one of: " + ", ".join(_yaml(c) for c in meta["choices"])
    ops = [f"{sym} {meta[op]:g}" for op, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
           if meta.get(op) is not None]
    parts = [" and ".join(ops)] if ops else []
    if meta.get("length") is not None:
        parts.append(f"a list of exactly {meta['length']}")
    if meta.get("min_length") is not None:
        parts.append(f"a list of at least {meta['min_length']}")
    if meta.get("unique"):
        parts.append("distinct items")
    if parts and meta.get("optional"):
        parts.append("or null")
    return ", ".join(parts)


def field_rows(schema: type, prefix: str = "") -> Iterator[Tuple[str, str, str, str, str]]:
    """``(dotted key, type, default, accepted, help)`` for every field of the dataclass ``schema``;
    a field holding a nested dataclass is expanded into its own keys."""
    notes = source_comments(schema)
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        factory = f.default_factory
        if isinstance(factory, type) and is_dataclass(factory):
            yield from field_rows(factory, key + ".")
            continue
        default = f.default if f.default is not NO_DEFAULT else (factory() if factory is not NO_DEFAULT else None)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        help_text = (f.metadata.get("help") if f.metadata else "") or notes.get(f.name, "")
        yield key, f"`{kind}`", f"`{_yaml(default)}`", _accepted(f.metadata or {}), help_text


def _table(schema: type, prefix: str = "") -> str:
    rows = [list(r) for r in field_rows(schema, prefix)]
    return markdown_table(_HEAD, rows, align=["l"] * len(_HEAD)) if rows else "No keys.\n"


def _doc(cls: type) -> str:
    return " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())


def config_reference() -> str:
    """The config reference as Markdown: the run config's sections, each method's ``players`` and
    ``eval`` keys, and each term's keys (``objective.<player>.<term>.<key>``)."""
    out: List[str] = ["## Run config", "", _doc(RunConfig), ""]
    top = [f for f in fields(RunConfig) if not (isinstance(f.default_factory, type) and is_dataclass(f.default_factory))]
    rows = [r for r in field_rows(RunConfig) if "." not in r[0] and r[0] in {f.name for f in top}]
    out += [markdown_table(_HEAD, [list(r) for r in rows], align=["l"] * len(_HEAD)), ""]
    for f in fields(RunConfig):
        factory = f.default_factory
        if isinstance(factory, type) and is_dataclass(factory):
            out += [f"### `{f.name}`", "", _doc(factory), "", _table(factory, f.name + "."), ""]
    out += ["## Methods: `players` and `eval`", "",
            "The `players` section's keys are the method's `Config`, the `eval` section's its `Eval` "
            "(`kdlab list methods`).", ""]
    for name in METHODS.names():
        cls = METHODS.get(name)
        objectives = ", ".join(f"`{p}`" for p in cls.objectives)
        out += [f"### `{name}`", "", _doc(cls), "",
                f"{cls.kind} {cls.role}; players with an objective: {objectives or 'none'}.", "",
                "`players`:", "", _table(cls.Config, "players."), ""]
        if cls.Eval is not EvalConfig:
            out += ["`eval`:", "", _table(cls.Eval, "eval."), ""]
    out += ["## Terms: `objective.<player>.<term>`", "",
            "Every term has `weight` (>= 0, 0 = off) and its own keys (`kdlab list terms`).", ""]
    for name in TERMS.names():
        cls = TERMS.get(name)
        roles = ", ".join(sorted(getattr(cls, "roles", ()) or ()))
        needs = ", ".join(sorted(getattr(cls, "requires", ()) or ()))
        out += [f"### `{name}`", "", _doc(cls), "", f"Players: {roles or 'any'}; needs: {needs or 'nothing'}.", "",
                _table(cls.Config, f"objective.<player>.{name}."), ""]
    return "\n".join(out)
