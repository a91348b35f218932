"""Config-time questions about a method class, asked before anything is built: its ``players`` schema (with
the synthesizer's keys under ``data.transfer: synth``), the players that take an ``objective`` and their
terms (expanded and checked), the transfer source it can use, and the old ``loss`` section refused with
each key's new place.

``objective: {<player>: {<term>: {weight, ...}, ...}, ...}``: the players a method trains with an
objective are :attr:`kdlab.games.base.Method.objectives` (player -> role); each player's terms are the
method's :attr:`~kdlab.games.base.Method.default_objective` for it, merged with the user's (a weight of 0
removes a default term). A term serves the roles in its :attr:`kdlab.terms.Term.roles`.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from kdlab.config import ConfigError
from kdlab.data.transfer import TRANSFER_SYNTH
from kdlab.terms import TERMS, legacy_spelling, term_config

_SCHEMAS: Dict[tuple, type] = {}


def synthesizing(raw: Any) -> bool:
    """Whether the raw (merged) config ``raw`` asks for synthetic transfer images (``data.transfer: synth``)."""
    data = raw.get("data") if raw is not None else None
    return data is not None and str(data.get("transfer") or "").strip().lower() == TRANSFER_SYNTH


def players_schema(cls: Any, raw: Any) -> Optional[type]:
    """The ``players`` schema of method class ``cls`` for ``raw``: its ``Config``, plus the synthesizer's keys
    (:class:`kdlab.games.synthesizer.SynthConfig`) when ``data.transfer: synth`` (one dataclass per combination)."""
    if not synthesizing(raw) or cls.synth_unsupported:
        return cls.Config
    from dataclasses import make_dataclass

    from kdlab.games.synthesizer import SynthConfig

    bases = tuple(b for b in (cls.Config, SynthConfig) if b is not None)
    if bases not in _SCHEMAS:
        _SCHEMAS[bases] = make_dataclass("+".join(b.__name__ for b in bases), [], bases=bases)
    return _SCHEMAS[bases]


def objective_roles(cls: Any, raw: Any) -> Dict[str, str]:
    """The players whose ``objective`` ``raw`` may set, with their roles: ``cls.objectives``, plus the
    synthesizer's ``generator`` (and ``discriminator`` with ``players.discriminator``) when synthesizing."""
    roles = dict(cls.objectives)
    if synthesizing(raw) and not cls.synth_unsupported:
        roles["generator"] = "generator"
        players = raw.get("players") if raw is not None else None
        if players is not None and players.get("discriminator") is not None:
            roles["discriminator"] = "discriminator"
    return roles


def check_transfer_source(cls: Any, raw: Any) -> None:
    """Refuse ``data.transfer: synth`` for a method that cannot use it, and ``data.synth_real`` without it.

    Raises:
        ConfigError: naming the method, why, and the methods that can.
    """
    data = raw.get("data") if raw is not None else None
    method = raw.get("method") if raw is not None else None
    if synthesizing(raw) and cls.synth_unsupported:
        from kdlab.games.base import METHODS  # filled: cls is a registered method

        able = [n for n in METHODS.names() if not METHODS.get(n).synth_unsupported]
        raise ConfigError(f"data.transfer = 'synth': method {method!r} cannot train on synthetic images ({cls.synth_unsupported}); "
                          f"methods that can: {', '.join(able)}")
    if data is not None and data.get("synth_real") is not None and not synthesizing(raw):
        raise ConfigError(f"data.synth_real = {data.get('synth_real')!r} gives the synthesizer real images; it needs "
                          f"data.transfer = 'synth', got {data.get('transfer')!r}")


def expand_objective(cls: Any, method: str, raw: Any, players: Dict[str, str]) -> Dict[str, Dict[str, DictConfig]]:
    """Every objective player of ``cls`` (``players``: name -> role) -> its full term configs (defaults
    merged, keys checked).

    Raises:
        ConfigError: a player the method does not have (names its players), a section that is not a
            mapping, an unknown term or key (:func:`kdlab.terms.term_config`), a term that cannot serve
            the player's role (names the roles it serves).
    """
    raw = raw if raw is not None else {}
    if not isinstance(raw, (dict, DictConfig)):
        raise ConfigError(f"config section 'objective' = {raw!r}; accepted: a mapping player -> terms, e.g. "
                          f"objective.student.kd.weight=1 (method {method!r} has: {', '.join(players) or 'no player'})")
    for player in raw.keys():
        if player not in players and not _all_off(raw.get(player)):
            raise ConfigError(f"objective.{player}: method {method!r} has no player {player!r} with an objective; "
                              f"its players: {', '.join(players) or '(none)'}")
    out: Dict[str, Dict[str, DictConfig]] = {}
    for player, role in players.items():
        given = raw.get(player)
        if given is not None and not isinstance(given, (dict, DictConfig)):
            raise ConfigError(f"objective.{player} = {given!r}; accepted: a mapping term -> its keys, e.g. "
                              f"objective.{player}.<term>.weight=1 (kdlab list terms)")
        terms = OmegaConf.merge(OmegaConf.create(dict(cls.default_objective.get(player, {}))), given or {})
        out[player] = {}
        for name, cfg in terms.items():
            name = str(name)
            full = term_config(name, cfg, where=f"objective.{player}")
            served = TERMS.get(name).roles
            if role not in served:
                raise ConfigError(f"objective.{player}.{name}: term {name!r} cannot be on player {player!r} of method "
                                  f"{method!r} (a {role}); it serves: {', '.join(sorted(served))}. Terms for a {role}: "
                                  f"{', '.join(n for n in TERMS.names() if role in TERMS.get(n).roles)}")
            out[player][name] = full
    return out


def _all_off(section: Any) -> bool:
    """Every term of ``section`` has weight 0 (an objective that builds nothing, e.g. a recipe's
    discriminator objective with the discriminator switched off)."""
    if not isinstance(section, (dict, DictConfig)) or not section:
        return False
    return all(isinstance(v, (dict, DictConfig)) and "weight" in v and float(v["weight"]) == 0 for v in section.values())


def loss_key_place(cls: Any, key: str) -> str:
    """Where the old ``loss.<key>`` of method ``cls`` lives now (``objective.…``, ``players.…`` or ``eval.…``),
    or "" when it has no place."""
    if key == "terms":
        return "objective.student"
    if key in cls.moved:
        return cls.moved[key]
    if cls.Config is not None and key in {f.name for f in fields(cls.Config)}:
        return f"players.{key}"
    if key in {f.name for f in fields(cls.Eval)}:
        return f"eval.{key}"
    from kdlab.games.synthesizer import SynthConfig

    if not cls.synth_unsupported and key in {f.name for f in fields(SynthConfig)}:
        return f"players.{key} (a key of the synthesizer: with data.transfer=synth)"
    legacy = legacy_spelling(key)
    return legacy or ""


def refuse_moved_players_keys(cls: Any, method: str, raw: Any) -> None:
    """A ``players`` key that became a term's key (e.g. KDGAN's ``gamma``, codistill's ``temperature``, the
    teacher's ``jacobian_penalty``) is refused with its new place, before the schema's generic unknown-key error.

    Raises:
        ConfigError: naming the key and where it went.
    """
    players = raw.get("players") if raw is not None else None
    if not isinstance(players, (dict, DictConfig)):
        return
    schema = players_schema(cls, raw)
    known = {f.name for f in fields(schema)} if schema is not None else set()
    moved = [f"players.{k} is now {cls.moved[k]}" for k in players.keys() if k not in known and k in cls.moved]
    if moved:
        raise ConfigError(f"method {method!r}: " + "; ".join(moved))


def refuse_loss_section(cls: Any, method: str, loss: Any) -> None:
    """The ``loss`` section is gone: raise with each of its keys' new place.

    Raises:
        ConfigError: always (``loss: {}`` included), naming each key and where it went.
    """
    if not isinstance(loss, (dict, DictConfig)):
        raise ConfigError(f"config section 'loss' is gone: a run's config is sectioned by role (objective, players, "
                          f"eval); got loss = {loss!r}")
    places: List[str] = []
    for key in loss.keys():
        place = loss_key_place(cls, str(key))
        places.append(f"loss.{key} is now {place}" if place else
                      f"loss.{key} has no place in method {method!r} (players keys: "
                      f"{', '.join(f.name for f in fields(cls.Config)) if cls.Config is not None else '(none)'})")
    raise ConfigError("config section 'loss' is gone (sections by role: objective, players, eval): "
                      + ("; ".join(places) if places else "remove it"))
