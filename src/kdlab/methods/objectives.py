"""The ``objective`` section at config time: each player's terms expanded and checked, and the old
``players`` section refused with each key's new place.

``objective: {<player>: {<term>: {weight, ...}, ...}, ...}``: the players a method trains with an
objective are :attr:`kdlab.methods.Method.objectives` (player -> role); each player's terms are the
method's :attr:`~kdlab.methods.Method.default_objective` for it, merged with the user's (a weight of 0
removes a default term). A term serves the roles in its :attr:`kdlab.terms.Term.roles`.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Dict, List

from omegaconf import DictConfig, OmegaConf

from kdlab.config import ConfigError
from kdlab.terms import TERMS, legacy_spelling, term_config


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
    legacy = legacy_spelling(key)
    return legacy.replace("objective.student.", "objective.student.") if legacy else ""


def refuse_loss_section(cls: Any, method: str, loss: Any) -> None:
    """The ``players`` section is gone: raise with each of its keys' new place.

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
