"""The ``scales:`` entries of a compare spec (e.g. ``small`` for 2 CPU cores, ``full`` for the paper's protocol
on a GPU) and the checks of the spec's list, mapping and seed fields they share with :mod:`kdlab.compare.spec`.

A scale entry adapts the spec: ``common`` / ``teacher_set`` and ``secondary`` are appended, ``student`` merged,
``seeds``, ``columns``, ``budget``, ``teachers``, ``init`` and ``callbacks`` replaced, ``methods`` replaces the
spec's rows and ``rows`` adds sets to some of them (:func:`kdlab.compare.inits.with_row_sets`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from kdlab.compare.inits import with_row_sets
from kdlab.config import ConfigError

__all__ = ["SCALE_KEYS", "apply_scale", "str_list", "mapping", "seeds"]

#: the keys of a ``scales`` entry (and what each does: lists appended, student merged, the rest replaced;
#: ``secondary`` comparisons are appended, e.g. on a column only this scale has; ``rows``: some rows' sets)
SCALE_KEYS = ("common", "teacher_set", "student", "seeds", "columns", "budget", "secondary", "teachers", "init", "rows",
              "methods", "callbacks")


def str_list(value: Any, key: str) -> List[str]:
    """A list of ``key=value`` strings (a single string is one item)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"compare spec key {key!r} must be a list of key=value strings; got {value!r}")
    bad = [i for i in items if "=" not in i or i.startswith("=")]
    if bad:
        raise ConfigError(f"compare spec key {key!r}: {bad[0]!r} is not of the form key=value (e.g. trainer.epochs=5)")
    return list(items)


def mapping(value: Any, key: str) -> Dict[str, Any]:
    """A mapping (None: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"compare spec key {key!r} must be a mapping; got {value!r}")
    return dict(value)


def seeds(value: Any, key: str = "seeds") -> List[int]:
    """A non-empty list of distinct integer seeds (or a comma-separated string of them)."""
    if isinstance(value, str):
        try:
            value = [int(s) for s in value.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"{key} = {value!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(s, int) and not isinstance(s, bool)
                                                                    for s in value):
        raise ConfigError(f"compare spec key {key!r} must be a non-empty list of integers; got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"compare spec key {key!r} = {list(value)} repeats a seed")
    return list(value)


def apply_scale(raw: Dict[str, Any], scale: Optional[str]) -> Tuple[Dict[str, Any], Optional[str]]:
    """``raw`` (a spec file's mapping) with its ``scales[scale]`` entry applied (None: the first entry), and
    the scale; a spec without ``scales`` is returned as it is, under the scale asked for.

    Raises:
        ConfigError: an unknown scale (lists the spec's), an unknown key of the entry (lists :data:`SCALE_KEYS`),
            or a value of the wrong type (names the key).
    """
    scales = mapping(raw.get("scales"), "scales")
    if not scales:
        return raw, scale
    scale = str(scale) if scale is not None else next(iter(scales))
    if scale not in scales:
        raise ConfigError(f"scale {scale!r}: this spec has no such entry under 'scales:'; accepted: "
                          f"{', '.join(map(str, scales))}")
    entry = mapping(scales[scale], f"scales.{scale}")
    bad = sorted(set(entry) - set(SCALE_KEYS))
    if bad:
        raise ConfigError(f"compare spec scales.{scale}: unknown key {bad[0]!r}; accepted: {', '.join(SCALE_KEYS)}")
    from omegaconf import OmegaConf

    out = dict(raw)
    for key in ("common", "teacher_set"):
        out[key] = str_list(raw.get(key), key) + str_list(entry.get(key), f"scales.{scale}.{key}")
    if entry.get("secondary"):  # lists checked by parse_comparisons
        out["secondary"] = list(raw.get("secondary") or []) + list(entry["secondary"])
    if "student" in entry:
        out["student"] = OmegaConf.to_container(OmegaConf.merge(mapping(raw.get("student"), "student"),
                                                                mapping(entry["student"], f"scales.{scale}.student")))
    out.update({k: entry[k] for k in ("seeds", "columns", "budget", "teachers", "init", "callbacks") if k in entry})
    # methods: this scale's own rows (e.g. the depth factors of a compression sweep), replacing the spec's
    out["methods"] = with_row_sets(entry.get("methods", raw.get("methods")),
                                   mapping(entry.get("rows"), f"scales.{scale}.rows"), scale)
    return out, scale
