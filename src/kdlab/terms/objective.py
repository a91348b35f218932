"""A player's objective: the configured terms, built by one call and summed.

``loss = sum_i weight_i * term_i(student outputs, teacher outputs, batch)``

:func:`build_objective` turns a player's ``objective.<player>`` section into an :class:`Objective` (unknown
term names, misspelt keys and terms whose inputs the method cannot provide are :class:`ConfigError`
before training). The objective says which features each network must expose, whether the teacher
runs at all and whether the input needs a gradient, and :class:`Student` runs the student network so
that every requested feature comes out of its one forward pass.
"""
from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from kdlab.config import ConfigError, check_section, friendly_error
from kdlab.data.batch import Batch
from kdlab.engine.loop import unwrap
from kdlab.models.base import capture_features
from kdlab.models.batch_stats import jacobian_forward
from kdlab.registry import UnknownNameError, did_you_mean
from kdlab.terms.base import TERMS, Outputs, Term, TermContext


def term_config(name: str, raw: Any, where: str = "objective.student") -> DictConfig:
    """The full config of term ``name``: its dataclass defaults merged with ``raw`` and checked;
    ``where`` is the objective it is in (for messages, e.g. ``objective.generator``).

    Raises:
        ConfigError: unknown term (lists the known ones), a key the term does not have (lists its
            keys), a wrong type, or a value outside its declared choices/range.
    """
    try:
        cls = TERMS.get(name)
    except UnknownNameError as exc:
        raise ConfigError(f"{where}: {exc} (kdlab list terms)") from None
    schema = OmegaConf.structured(cls.Config)
    keys = ", ".join(schema.keys())
    if raw is not None and not isinstance(raw, (Mapping, DictConfig)):
        raise ConfigError(f"{where}.{name} must be a mapping of the term's keys ({keys}); got {raw!r}")
    if raw is not None:
        for key in raw.keys():
            if key not in schema:
                raise ConfigError(f"{where}.{name}: unknown key {key!r}{did_you_mean(key, schema.keys())}; "
                                  f"term {name!r} accepts: {keys}")
    try:
        cfg = OmegaConf.merge(schema, raw or {})
    except OmegaConfBaseException as exc:
        key = getattr(exc, "key", None)
        words = str(friendly_error(exc)).partition("; accepted: ")[2]  # the type the key takes, when known
        if words:
            raise ConfigError(f"config key '{where}.{name}.{key}' = {getattr(exc, 'value', None)!r}; accepted: {words}") from None
        raise ConfigError(f"{where}.{name}.{key}: {str(exc).splitlines()[0]} (keys: {keys})") from None
    check_section(cfg, cls.Config, f"{where}.{name}")
    return cfg


def legacy_spelling(key: str) -> Optional[str]:
    """The new spelling of an old flat ``loss.<key>`` of the distill method, or None if it had none."""
    hits = [f"objective.student.{name}.{TERMS.get(name).legacy[key]}" for name in TERMS.names() if key in TERMS.get(name).legacy]
    return " / ".join(hits) or None


def forward_features(net: nn.Module, x: torch.Tensor, names: Sequence[str]) -> Tuple[Any, Dict[str, torch.Tensor]]:
    """``net(x)`` and the named features of the same pass (hooks only when names are asked for). A
    Fabric/DDP-wrapped ``net`` is called through its wrapper, with the hooks on the module inside."""
    if not names:
        return net(x), {}
    with capture_features(unwrap(net), list(names)) as store:
        out = net(x)
    missing = [n for n in names if n not in store]
    if missing:
        raise RuntimeError(f"feature(s) {missing} were not produced: their modules did not run in forward")
    return out, {n: store[n] for n in names}


def _outputs(out: Any, feats: Dict[str, torch.Tensor], x: torch.Tensor) -> Outputs:
    if isinstance(out, tuple):  # a two-headed network: (logits scored against labels, matched logits)
        return Outputs(out=out[1], features=feats, label_logits=out[0], x=x)
    return Outputs(out=out, features=feats, x=x)


def network_outputs(net: nn.Module, x: torch.Tensor, names: Sequence[str]) -> Outputs:
    """``net``'s :class:`Outputs` on ``x`` with the features ``names``, teacher and student alike.

    When ``x`` requires grad (a term takes input gradients) and ``net`` has a layer that mixes samples
    (train-mode BatchNorm), the outputs come from the ordinary pass on ``x.detach()`` and
    ``jacobian_pass`` holds a second pass on ``x`` with the batch statistics held constant
    (:func:`kdlab.models.batch_stats.jacobian_forward`): the student's per-sample Jacobians are then
    the same kind of object as the eval-mode teacher's (the network as it acts on one sample)."""
    if not names and not x.requires_grad:  # logits only, no input gradients: no hooks, no second pass
        return _outputs(net(x), {}, x)
    (out, feats), per = jacobian_forward(unwrap(net), x, lambda v: forward_features(net, v, names))
    main = _outputs(out, feats, x)
    if per is not None:
        main.jacobian_pass = _outputs(per[0], per[1], x)
    return main


class Objective(nn.Module):
    """The weighted sum of the configured terms (an ``nn.Module``: it holds their trainable parts).

    Args:
        terms: name -> built :class:`Term` (in summation order).
    """

    def __init__(self, terms: Mapping[str, Term]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(dict(terms))
        self._items = list(self.terms.items())  # ModuleDict.items() builds its list anew at every call
        for name, term in self.terms.items():
            term.term_name = name
        ordered = lambda attr: list(dict.fromkeys(n for t in self.terms.values() for n in getattr(t, attr)))  # noqa: E731
        self.student_features: List[str] = ordered("student_features")
        self.teacher_features: List[str] = ordered("teacher_features")
        self.needs_teacher = any("teacher" in t.requires for t in self.terms.values())
        self.needs_student = any("student" in t.requires for t in self.terms.values())  # another player's objective
        self.needs_input_grad = any("input_grad" in t.requires for t in self.terms.values())
        self.has_updates = bool(self.players())  # terms with players of their own update after each student step
        # the terms that derive per-example quantities from the teacher (the others are not asked each step)
        self._deriving = [(n, t) for n, t in self.terms.items() if type(t).teacher_derived is not Term.teacher_derived]

    def __len__(self) -> int:
        return len(self.terms)

    def prepare_input(self, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``x`` as a fresh leaf with ``requires_grad`` when a term needs input gradients.

        Raises:
            ValueError: input gradients with a privileged teacher view (teacher and student must see
                one shared input).
        """
        if not self.needs_input_grad:
            return x
        if batch.x_teacher is not None:
            raise ValueError("input-gradient terms (jacobian, attention_jacobian) need teacher and student to see "
                             "the same input; drop data.privileged or those terms")
        return x.detach().requires_grad_(True)

    def teacher_outputs(self, teacher: nn.Module, x: torch.Tensor, batch: Batch) -> Optional[Outputs]:
        """The teacher's outputs and features, or None when no term needs them. Without a graph, except
        to ``x`` when a term needs input gradients (the teacher's parameters are frozen). Each term's
        :meth:`~kdlab.terms.base.Term.teacher_derived` quantities (for ``batch``) fill ``derived``."""
        if not self.needs_teacher:
            return None
        with torch.set_grad_enabled(self.needs_input_grad and torch.is_grad_enabled()):
            t = network_outputs(teacher, x, self.teacher_features)
        for name, term in self._deriving:
            t.derived.update({f"{name}/{k}": v for k, v in term.teacher_derived(t, batch).items()})
        return t

    @property
    def teacher_cache_blockers(self) -> List[str]:
        """Why the teacher's outputs cannot be cached for these terms (empty: they can)."""
        return [why for term in self.terms.values() if (why := term.teacher_cache_blocker)]

    def forward(self, s: Outputs, t: Optional[Outputs], batch: Batch) -> Dict[str, torch.Tensor]:
        """``{term name: weight * term, ..., "loss": their sum}`` (``loss`` = 0 without terms).

        Each term is called through its ``forward``, not ``nn.Module.__call__``: kdlab puts no hooks on terms,
        and the hook dispatch costs ~1.5 us a term a step, which shows on small models' steps."""
        values = {}
        for name, term in self._items:
            value = term.forward(s, t, batch)
            values[name] = value if term.weight == 1.0 else term.weight * value  # 1.0 * x is x: no extra op
        # summed from the first term, not from 0 (sum() would add a tensor op for 0 + x)
        values["loss"] = functools.reduce(operator.add, values.values()) if values else s.out.new_zeros(())
        return values

    def set_epoch(self, epoch: int) -> None:
        """Tell every term the epoch now starting (:meth:`kdlab.terms.Term.set_epoch`)."""
        for term in self.terms.values():
            term.set_epoch(epoch)

    def players(self) -> Dict[str, Tuple[nn.Module, Any]]:
        """Every term's own players, named ``<term>.<player>``."""
        return {f"{n}.{p}": v for n, t in self.terms.items() for p, v in t.players().items()}

    def bind(self, wrapped: Mapping[str, nn.Module]) -> None:
        """Hand each term its players as wrapped for training (``wrapped``: ``<term>.<player>`` -> module)."""
        for name, term in self.terms.items():
            term.bind({k.split(".", 1)[1]: m for k, m in wrapped.items() if k.split(".", 1)[0] == name})

    def update(self, s: Outputs, t: Optional[Outputs], batch: Batch,
               step: Callable[[str, torch.Tensor], None]) -> Dict[str, torch.Tensor]:
        """Each term's own update (after the student's step); ``step`` names players ``<term>.<player>``."""
        logs: Dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            own = term.update(s, t, batch, lambda player, loss, n=name: step(f"{n}.{player}", loss))
            logs.update({f"{name}/{k}": v for k, v in own.items()})
        return logs


class Student(nn.Module):
    """One player: the student network plus its objective's trainable modules (hint regressors ...),
    so one optimizer (and one DDP wrapper) covers both.

    ``forward(x) -> Outputs``: the network's output and every feature the objective (and
    ``extra_features``, e.g. features a peer's objective reads) asks for, in one pass; when ``x``
    requires grad and the network has train-mode BatchNorm, also its Jacobian pass
    (``Outputs.jacobian_pass``, see :func:`network_outputs`).
    """

    def __init__(self, net: nn.Module, objective: Objective, extra_features: Sequence[str] = ()) -> None:
        super().__init__()
        self.net = net
        self.objective = objective
        self.feature_names = list(dict.fromkeys(list(objective.student_features) + list(extra_features)))

    def forward(self, x: torch.Tensor) -> Outputs:
        return network_outputs(self.net, x, self.feature_names)


def build_objective(terms_cfg: Optional[Mapping[str, Any]], ctx: TermContext, player: str = "student") -> Objective:
    """The one call every method uses to build a player's objective from ``objective.<player>``.

    Terms of weight 0 are skipped (not built, not computed). A term whose requirements the method
    does not provide is refused.

    Raises:
        ConfigError: unknown term or key (see :func:`term_config`), a term used where its inputs do
            not exist (names the term, the method and what is missing), bad feature names.
    """
    terms: Dict[str, Term] = {}
    for name in (terms_cfg or {}):
        cfg = term_config(name, terms_cfg[name], where=f"objective.{player}")
        if cfg.weight == 0:
            continue
        cls = TERMS.get(name)
        missing = sorted(set(cls.requires) - set(ctx.provides))
        if missing:
            why = "; ".join(ctx.why_not[m] for m in missing if m in ctx.why_not)
            raise ConfigError(
                f"term {name!r} needs {', '.join(missing)}, which method {ctx.method!r} ({ctx.kind} student) does not "
                f"provide{': ' + why if why else ''}; drop objective.{player}.{name} or use a method that provides it")
        terms[name] = cls(cfg, ctx)
    return Objective(terms)
