"""The rules a config field declares once, in its dataclass metadata, and the checks that apply them.

:func:`choice` (one of a set), :func:`bounded` (numeric ranges, list lengths, uniqueness, always
finite), :func:`temperature_field`; :func:`check_section` checks a section (run config, a method's
``loss``, a term) against its schema, :func:`check_finite` refuses NaN/inf anywhere, :func:`check_devices`
and :func:`check_processes` refuse devices and processes this machine lacks. Every failure is a
:class:`ConfigError` naming the key, the value and what is accepted. Used through :mod:`kdlab.config`.
"""
from __future__ import annotations

import math
import os
from dataclasses import field, fields, is_dataclass
from typing import Any, Mapping, Optional, Sequence


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the key and what is accepted."""


#: the smallest accepted softmax temperature: below it ``softmax(z / T)`` is one-hot in float32 for any
#: logit gap, so a KD term's gradient vanishes and the term silently does nothing (``players.temperature=1e-30``)
TEMPERATURE_MIN = 1e-3


# ----------------------------------------------------------------- declared choices and ranges
# A dataclass field states its accepted values once, in its metadata; :func:`check_section` checks
# every section (run config, method ``players`` sections, terms) with that one rule set.


def choice(default: Any, choices: Sequence[Any], help: str = "") -> Any:
    """A dataclass field whose value must be one of ``choices``."""
    return field(default=default, metadata={"choices": tuple(choices), "help": help})


def bounded(default: Any, *, ge: Optional[float] = None, gt: Optional[float] = None, le: Optional[float] = None,
            lt: Optional[float] = None, optional: bool = False, length: Optional[int] = None,
            min_length: Optional[int] = None, unique: bool = False, help: str = "") -> Any:
    """A numeric dataclass field with bounds (``ge``: >=, ``gt``: >, ``le``: <=, ``lt``: <); ``optional``
    lets ``None`` through. For a list field the bounds apply to every item, ``length`` / ``min_length``
    to the number of items and ``unique`` forbids repeats. Every number must be finite (no NaN/inf).
    Lists default through ``default_factory`` when ``default`` is a list."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "optional": optional, "length": length,
            "min_length": min_length, "unique": unique, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def temperature_field(default: float, help: str = "") -> Any:
    """A softmax-temperature field: a finite number >= :data:`TEMPERATURE_MIN`."""
    return bounded(default, ge=TEMPERATURE_MIN, help=help)


def _bounds_text(meta: Any) -> str:
    ops = [(op, meta[op]) for op in ("ge", "gt", "le", "lt") if meta.get(op) is not None]
    return " and ".join({"ge": ">= ", "gt": "> ", "le": "<= ", "lt": "< "}[op] + (str(int(b)) if float(b).is_integer()
                        else f"{b:g}") for op, b in ops)


def _check_value(key: str, value: Any, meta: Any) -> None:
    if "choices" in meta:
        if value not in meta["choices"]:
            raise ConfigError(f"config key {key!r} = {value!r}; accepted: {', '.join(map(str, meta['choices']))}")
        return
    bounds = [(op, meta[op]) for op in ("ge", "gt", "le", "lt") if meta.get(op) is not None]
    if value is None and meta.get("optional"):
        return
    is_list = isinstance(value, Sequence) and not isinstance(value, str)
    items = list(value) if is_list else [value]
    if is_list:
        n, want, least = len(items), meta.get("length"), meta.get("min_length")
        if want is not None and n != want:
            raise ConfigError(f"config key {key!r} = {items!r} has {n} item(s); accepted: a list of exactly {want}")
        if least is not None and n < least:
            raise ConfigError(f"config key {key!r} = {items!r} has {n} item(s); accepted: a list of at least {least}")
        if meta.get("unique") and len(set(items)) != n:
            raise ConfigError(f"config key {key!r} = {items!r} repeats an item; accepted: distinct items")
    if not bounds:
        return
    for v in items:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and all({"ge": v >= b, "gt": v > b, "le": v <= b, "lt": v < b}[op] for op, b in bounds)
        if not ok:
            what = f" (item {v!r})" if is_list else ""
            null = " (or null)" if meta.get("optional") else ""
            finite = " (a finite number: NaN and inf are refused)" if isinstance(v, float) and not math.isfinite(v) else ""
            raise ConfigError(f"config key {key!r} = {value!r}{what} must be {_bounds_text(meta)}{null}{finite}")


def check_finite(node: Any, prefix: str = "") -> None:
    """Refuse NaN and inf anywhere in a config (nested mappings and lists, any section, any method).

    Raises:
        ConfigError: naming the dotted key (``objective.student.kd.weight``, ``eval.noise_sigmas[0]``) and the value.
    """
    if isinstance(node, Mapping):
        for k, v in node.items():
            check_finite(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            check_finite(v, f"{prefix}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"config key {prefix!r} = {node!r}; accepted: a finite number (NaN and inf are refused)")


_YAML_BOOLS = {"True": "on", "False": "off"}


def check_section(section: Any, schema: type, prefix: str) -> None:
    """Check every field of ``section`` (a DictConfig or object) against the choices/bounds declared in
    the metadata of the dataclass ``schema`` (see :func:`choice`, :func:`bounded`); nested dataclass
    sections (fields with a dataclass ``default_factory``) are checked recursively.

    Raises:
        ConfigError: naming ``prefix.key``, the value and what is accepted.
    """
    for f in fields(schema):
        value = getattr(section, f.name, None)
        key = f"{prefix}.{f.name}" if prefix else f.name
        factory = f.default_factory
        if isinstance(factory, type) and is_dataclass(factory):
            if value is not None:
                check_section(value, factory, key)
        elif f.metadata:
            alias = _YAML_BOOLS.get(str(value)) if isinstance(value, (bool, str)) else None
            if alias is not None and alias in f.metadata.get("choices", ()):
                value = alias  # YAML 1.1 reads a bare on/off as a boolean
                setattr(section, f.name, value)
            _check_value(key, value, f.metadata)


# ----------------------------------------------------------------- OmegaConf errors in words
#: OmegaConf's type-conversion messages -> what the key accepts (``trainer.epochs=[1,2]``, ``name=``, ``data.classes=abc``)
_TYPE_WORDS = (("to Integer", "an integer"), ("to Float", "a number"), ("valid bool", "true or false"),
               ("of type 'str'", "a non-empty string"), ("to string", "a string"), ("not a ListConfig", "a list, e.g. [a, b]"),
               ("to Dict", "a mapping of keys, e.g. {a: 1}"), ("Invalid type assigned", "a mapping of keys"))


def friendly_error(exc: Any) -> ConfigError:
    """An OmegaConf error (unknown key, wrong type) as a :class:`ConfigError` naming the key, the value and
    what is accepted (the keys of the section, with a suggestion; the type the key takes)."""
    from dataclasses import is_dataclass

    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import ConfigKeyError

    from kdlab.registry import did_you_mean

    key = getattr(exc, "full_key", None)
    msg = str(exc).split("\n")[0]
    accepted = next((what for pattern, what in _TYPE_WORDS if pattern in msg), None)
    if key and accepted and not isinstance(exc, ConfigKeyError):
        value = getattr(exc, "value", None)
        value = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
        shown = "empty (null)" if value is None else repr(value)
        return ConfigError(f"config key {key!r} = {shown}; accepted: {accepted}")
    schema = getattr(exc, "object_type", None)
    if isinstance(exc, ConfigKeyError) and is_dataclass(schema):
        names = [f.name for f in fields(schema)]  # OmegaConf suggests only sometimes: always name the keys
        msg = msg.split(". Did you mean")[0].rstrip(".")
        msg += f"{did_you_mean(getattr(exc, 'key', ''), names)}; accepted: {', '.join(names)}"
    return ConfigError(f"config key {key!r}: {msg}" if key else f"config: {msg}")


def check_processes(key: str, value: Any, what: str) -> None:
    """Refuse more processes than ``max(8, 4 x CPU cores)`` (``data.num_workers=1000`` forks 1000 copies).

    Raises:
        ConfigError: naming ``key``, the value, the cores and the accepted range.
    """
    most = max(8, 4 * (os.cpu_count() or 1))
    if isinstance(value, int) and value > most:
        raise ConfigError(f"config key {key!r} = {value} {what} but this machine has {os.cpu_count()} CPU core(s); "
                          f"accepted: 0..{most}")


# ----------------------------------------------------------------- output paths
def check_output_dir(path: Any, what: str, writable: bool = True) -> None:
    """Refuse a directory that cannot be created or written: ``path`` (or the nearest part of it that
    exists) is a file, or (``writable``) that part is not writable. Called before anything is written.

    Raises:
        ConfigError: naming ``what`` (``config key 'out_dir'``, ``--out``), the path and what is accepted.
    """
    from pathlib import Path

    p = Path(str(path)).expanduser()
    existing = next((a for a in (p, *p.parents) if a.exists()), None)
    if existing is None:
        return
    accepted = "accepted: a directory you can write (created if missing)"
    if not existing.is_dir():
        where = "" if existing == p else f": {str(existing)!r} is a file, so nothing can be created below it"
        raise ConfigError(f"{what} = {str(path)!r}{where or ' is a file'}; {accepted}")
    if writable and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} = {str(path)!r}: {str(existing)!r} is not writable; {accepted}")


def check_output_file(path: Any, what: str) -> None:
    """Refuse an output file that is a directory or whose folder cannot be created (:func:`check_output_dir`).

    Raises:
        ConfigError: naming ``what`` (``--json``, ``--out``), the path and what is accepted.
    """
    from pathlib import Path

    p = Path(str(path)).expanduser()
    if p.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a directory; accepted: a file name (e.g. {str(p / 'out.json')!r})")
    check_output_dir(p.parent, f"{what} {str(path)!r}: its folder")


def check_devices(trainer: Any) -> None:
    """``trainer.accelerator`` / ``trainer.devices`` name devices this machine has.

    Raises:
        ConfigError: CUDA (``cuda``/``gpu``) without a CUDA device, more CUDA devices than exist, MPS
            without MPS, more CPU processes than max(4, CPU cores), or ``devices`` that is not a positive
            int, a list of ids or ``auto``.
    """
    devices = trainer.devices
    if isinstance(devices, str) and devices != "auto":
        try:
            devices = int(devices)
        except ValueError:
            devices = None
    ok = devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1) or (
        isinstance(devices, Sequence) and not isinstance(devices, str) and len(devices) > 0
        and all(isinstance(d, int) and d >= 0 for d in devices))
    if not ok:
        raise ConfigError(f"config key 'trainer.devices' = {trainer.devices!r}; accepted: a count >= 1, a list of "
                          f"device ids or 'auto'")
    accel = trainer.accelerator
    if accel == "cpu" and isinstance(devices, int):
        # CPU processes: each holds the model and the data; 100 of them ran this machine out of memory
        most = max(4, os.cpu_count() or 1)
        if devices > most:
            raise ConfigError(f"config key 'trainer.devices' = {devices} CPU processes but this machine has "
                              f"{os.cpu_count()} CPU core(s); accepted with trainer.accelerator=cpu: 1..{most}")
    if accel not in ("cuda", "gpu", "mps"):
        return
    import torch

    if accel == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("config key 'trainer.accelerator' = 'mps' but this machine has no MPS device; "
                              "accepted here: cpu, auto")
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"config key 'trainer.accelerator' = {accel!r} but this machine has no CUDA device "
                          f"(torch.cuda.is_available() is False); accepted here: cpu, auto")
    wanted = devices if isinstance(devices, int) else (max(devices) + 1 if not isinstance(devices, str) else 1)
    if wanted > count:
        raise ConfigError(f"config key 'trainer.devices' = {trainer.devices!r} but this machine has {count} CUDA "
                          f"device(s); accepted: 1..{count} or ids 0..{count - 1}")
