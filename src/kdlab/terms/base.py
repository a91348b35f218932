"""The term interface: one student-objective term = one registered class.

A term is a small ``nn.Module`` built from its own config dataclass (always with a ``weight``) and a
:class:`TermContext` (which method, which student and teacher, what the batches carry). It declares
what it needs (:attr:`Term.requires`: the teacher's outputs, logits or images, labels, named
features, input gradients), may own trainable modules (a FitNets regressor; later VID variances,
CRD heads and memory), and may own players with optimizers of their own and an :meth:`Term.update`
step (later: an energy-based model). Its :meth:`Term.forward` returns the UNWEIGHTED scalar; the
:class:`kdlab.terms.objective.Objective` multiplies by ``weight`` and sums.

Adding a term = one file in ``kdlab/terms/`` with a class registered by ``@TERMS.register(name)``
(the package imports its modules on first use), or the same in any module imported before the run.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, ClassVar, Dict, FrozenSet, List, Optional, Sequence, Tuple

import torch
from torch import nn

from kdlab.config import ConfigError, bounded
from kdlab.data.batch import Batch
from kdlab.models.base import UnknownFeatureError, feature_shapes
from kdlab.registry import Registry

#: Every term by name (``kdlab list terms``).
TERMS = Registry("term")

#: What a method can provide to terms (see :attr:`Term.requires`):
#: ``teacher``: teacher outputs for the same examples; ``logits``: classifier outputs [B, K];
#: ``images``: generator outputs [B, C, H, W]; ``labels``: ``batch.y``; ``features``: named
#: intermediate features (forward hooks); ``input_grad``: one input leaf shared by teacher and student;
#: ``index``: ``batch.index``, each example's row in the transfer source (``TermContext.transfer_size`` rows);
#: ``targets``: ``batch.target``, the ground-truth output image of a paired translation task; ``critic``: the
#: method's discriminator, whose outputs and named features terms read through :attr:`TermContext.critic`;
#: ``student``: the student's outputs on this player's outputs (:attr:`Outputs.opponent`), for the objective of
#: another player (a synthesizer's generator: the adversarial term); ``teacher_critic``: the teacher GAN's own
#: discriminator, frozen (GCC's D^t, VEM eq. 17), read through :attr:`TermContext.teacher_critic`.
CAPABILITIES = ("teacher", "logits", "images", "labels", "features", "input_grad", "index", "targets", "critic",
                "student", "teacher_critic")

#: Reserved feature name of a network's main output (logits [B, K] or images [B, C, H, W]): a term's
#: ``layers`` may pair it like any named feature, e.g. ``[[output, output]]``.
OUTPUT = "output"


@dataclass
class TermConfig:
    """Keys every term has: ``weight`` multiplies the term in the objective (0 = off: not built)."""

    weight: float = bounded(1.0, ge=0)


@dataclass
class Outputs:
    """One network's outputs for a batch, as terms see them.

    Attributes:
        out: the main output: logits [B, K] (classifiers) or images [B, C, H, W] in [-1, 1] (generators).
        features: friendly feature name -> tensor [B, ...] from the same forward pass.
        label_logits: the logits scored against ``batch.y`` when they are not ``out`` (a two-headed
            student: LwF's target head, while ``out`` is the head matched to the teacher); else None.
        x: the input the outputs were computed from (a leaf with ``requires_grad`` when a term needs
            input gradients).
        derived: per-example quantities the terms derive from the teacher alone (``"<term>/<key>"`` ->
            tensor [B, ...], see :meth:`Term.teacher_derived`), e.g. the teacher's input Jacobians;
            empty for a student.
        jacobian_pass: the same outputs and features recomputed from the input leaf ``x`` with every
            train-mode BatchNorm's batch statistics held constant (:func:`kdlab.models.batch_stats.jacobian_forward`),
            so that their input gradients are per-sample Jacobians; None when this pass's already are
            (no batch-coupled layer, e.g. the eval-mode teacher) or no term takes input gradients.
        opponent: in another player's objective, the student's outputs on this player's outputs (a
            synthesizer's generator: the student's logits on the generated images, for the ``adversarial``
            term; capability ``student``); else None.
    """

    out: torch.Tensor
    features: Dict[str, torch.Tensor] = field(default_factory=dict)
    label_logits: Optional[torch.Tensor] = None
    x: Optional[torch.Tensor] = None
    derived: Dict[str, torch.Tensor] = field(default_factory=dict)
    jacobian_pass: Optional["Outputs"] = None
    opponent: Optional["Outputs"] = None

    @property
    def logits_for_labels(self) -> torch.Tensor:
        return self.out if self.label_logits is None else self.label_logits

    @property
    def for_jacobian(self) -> "Outputs":
        """The outputs whose input gradients (w.r.t. ``x``) are per-sample Jacobians: the Jacobian
        pass when there is one, else these. Terms that differentiate w.r.t. the input read these."""
        return self if self.jacobian_pass is None else self.jacobian_pass


@dataclass
class TermContext:
    """What a term may know when it is built.

    Attributes:
        method: the method's registry name (for error messages).
        kind: ``"classifier"`` or ``"generator"`` (the student's kind).
        student: the student network (unwrapped, on the CPU).
        teacher: the teacher network, or None.
        student_input: per-sample input shape of the student, e.g. (C, H, W) or (latent_dim,).
        teacher_input: per-sample input shape of the teacher.
        provides: the capabilities the method provides (subset of :data:`CAPABILITIES`).
        why_not: capability -> why the method does not provide it (completes error messages).
        num_classes: K of the classification task (None for generators).
        transfer_size: rows of the transfer source per epoch (``batch.index`` lies in [0, transfer_size));
            None when the method was built without data.
        steps_per_epoch: optimiser steps per epoch, ``ceil(transfer_size / data.batch_size)`` (for
            schedules counted in epochs, e.g. a warm-up); None without data.
        spec: the data set's :class:`kdlab.data.DataSpec` (channels, normalisation, translation pairing),
            or None.
        critic: the method's discriminator as terms may read it (:class:`CriticView`), or None.
        teacher_critic: the teacher's discriminator (frozen, never a player), as a :class:`CriticView`, or None.
        role: the role of the player whose objective is being built (``student``, ``generator``,
            ``discriminator``, ``teacher``; see :attr:`kdlab.methods.Method.objectives`).
        game: the host method's shared game state that terms of that game read (KDGAN: ``alpha``, ``k``,
            ``sampler``, the Gumbel temperature ``tau`` and ``sample(logits)``), or None.
    """

    method: str
    kind: str
    student: nn.Module
    teacher: Optional[nn.Module]
    student_input: Tuple[int, ...]
    teacher_input: Tuple[int, ...]
    provides: FrozenSet[str]
    why_not: Dict[str, str] = field(default_factory=dict)
    num_classes: Optional[int] = None
    transfer_size: Optional[int] = None
    steps_per_epoch: Optional[int] = None
    spec: Any = None
    critic: Optional["CriticView"] = None
    teacher_critic: Optional["CriticView"] = None
    role: str = "student"
    game: Any = None

    def _shapes(self, net: Optional[nn.Module], names: Sequence[str], shape: Tuple[int, ...], term: str,
                who: str) -> Dict[str, Tuple[int, ...]]:
        if not names:
            return {}
        if net is None:
            raise ConfigError(f"term {term!r} needs {who} features, but method {self.method!r} has no {who}")
        named = [n for n in names if n != OUTPUT]
        try:
            out = feature_shapes(net, named, tuple(shape)) if named else {}
        except UnknownFeatureError as exc:
            raise ConfigError(f"term {term!r} in method {self.method!r}: the {who} {exc} "
                              f"(or {OUTPUT!r}: the main output)") from None
        if OUTPUT in names:
            out[OUTPUT] = output_shape(net, shape)
        return out

    def student_shapes(self, names: Sequence[str], term: str) -> Dict[str, Tuple[int, ...]]:
        """Per-sample shapes of the student's features ``names``.

        Raises:
            ConfigError: an unknown feature (names the term, the method and the known features).
        """
        return self._shapes(self.student, names, self.student_input, term, "student")

    def teacher_shapes(self, names: Sequence[str], term: str) -> Dict[str, Tuple[int, ...]]:
        """Per-sample shapes of the teacher's features ``names`` (errors as :meth:`student_shapes`)."""
        return self._shapes(self.teacher, names, self.teacher_input, term, "teacher")


class CriticView:
    """The method's discriminator as terms see it: its named features of images, with D held fixed.

    GCC (VEM paper eq. 17) compares the discriminator's intermediate maps of student and teacher images;
    the discriminator is the method's player (trained by the method), so a term reads it through this
    view and never owns or steps it.

    Args:
        get: returns the live discriminator (unwrapped; called at every use, so the term sees its
            current weights on its current device).
        input_shape: per-sample shape ``(C, H, W)`` of the images D judges (without the condition).
        condition_channels: channels of the source image D is conditioned on (concatenated before the
            image, pix2pix's conditional D); 0 for an unconditional D.
        trained: returns D as wrapped for training (Fabric/DDP), for the terms of D's own objective that run
            it with gradients to its parameters (a gradient penalty); default ``get``.
    """

    def __init__(self, get: Callable[[], nn.Module], input_shape: Tuple[int, ...], condition_channels: int = 0,
                 trained: Optional[Callable[[], nn.Module]] = None) -> None:
        self.get = get
        self.trained = trained or get
        self.input_shape = tuple(int(v) for v in input_shape)
        self.condition_channels = int(condition_channels)

    def _run(self, images: torch.Tensor, condition: Optional[torch.Tensor], names: Sequence[str]) -> tuple:
        """``(D's output, {name: feature})`` of one forward pass on ``images`` (``cat(condition, images)`` for a
        conditional D) with D's parameters frozen meanwhile."""
        from kdlab.features import capture_features

        if self.condition_channels:
            if condition is None:
                raise ValueError("a conditional discriminator needs the source images as condition")
            images = torch.cat([condition.to(images.dtype), images], 1)
        d = self.get()
        params = [p for p in d.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            with capture_features(d, list(names)) as store:
                out = d(images)
        finally:
            for p in params:
                p.requires_grad_(True)
        return out, {n: store[n] for n in names}

    def features(self, images: torch.Tensor, names: Sequence[str],
                 condition: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """D's features ``names`` of ``images`` [B, C, H, W] (D reads ``cat(condition, images)`` when it is
        conditional): ``{name: [B, ...]}`` with a graph to ``images`` only (D's parameters get no gradient).
        One forward pass, in D's current mode (pass student and teacher images as one batch so that a
        BatchNorm D normalises both alike).

        Raises:
            ValueError: a conditional D without ``condition``.
        """
        return self._run(images, condition, names)[1]

    def scores(self, images: torch.Tensor, condition: Optional[torch.Tensor] = None) -> torch.Tensor:
        """D's output on ``images`` [B, C, H, W] (``[B]`` or a map ``[B, 1, h, w]``) with a graph to ``images`` only
        (D's parameters get no gradient); D reads ``cat(condition, images)`` when it is conditional.

        Raises:
            ValueError: a conditional D without ``condition``.
        """
        return self._run(images, condition, ())[0]

    def feature_names(self) -> List[str]:
        """D's friendly feature names (``feature_layers``), in order."""
        return list(getattr(self.get(), "feature_layers", {}) or {})

    def shapes(self, names: Sequence[str], term: str) -> Dict[str, Tuple[int, ...]]:
        """Per-sample shapes of D's features ``names``.

        Raises:
            ConfigError: an unknown feature (names the term and D's known features).
        """
        shape = (self.condition_channels + self.input_shape[0],) + self.input_shape[1:]
        try:
            return feature_shapes(self.get(), list(names), shape)
        except UnknownFeatureError as exc:
            raise ConfigError(f"term {term!r}: the discriminator {exc}") from None


def output_shape(net: nn.Module, input_shape: Sequence[int]) -> Tuple[int, ...]:
    """Per-sample shape of ``net``'s main output (the matched head of a two-headed network), from a
    dry run on one zero input in eval mode without gradients (the mode is restored)."""
    p = next(net.parameters(), None)
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, *input_shape, device=p.device if p is not None else None))
    finally:
        net.train(was)
    out = out[1] if isinstance(out, tuple) else out
    return tuple(out.shape[1:])


def pick(o: "Outputs", name: str) -> torch.Tensor:
    """Feature ``name`` of ``o``, or its main output for :data:`OUTPUT`."""
    return o.out if name == OUTPUT else o.features[name]


def layer_pairs(layers: Sequence[Sequence[str]], term: str,
                default: Optional[Sequence[Tuple[str, str]]] = None) -> List[Tuple[str, str]]:
    """``[[student feature, teacher feature], ...]`` as tuples; ``default`` (e.g. ``[(OUTPUT, OUTPUT)]``)
    when ``layers`` is empty and a default is given.

    Raises:
        ConfigError: an entry that is not a pair, or no pair at all without a default (names
            ``objective.student.<term>.layers``).
    """
    if not layers and default is not None:
        return [tuple(p) for p in default]
    out = []
    for item in layers:
        if len(item) != 2:
            raise ConfigError(f"objective.student.{term}.layers entries are [student feature, teacher feature]; got {list(item)}")
        out.append((str(item[0]), str(item[1])))
    if not out:
        raise ConfigError(f"term {term!r} needs objective.student.{term}.layers: [[student feature, teacher feature], ...]")
    return out


def plain_config(cfg: Any) -> Any:
    """``cfg`` as plain Python attributes: a structured ``DictConfig`` becomes its dataclass instance
    (nested containers become lists and dicts), an untyped one a ``SimpleNamespace``; anything else is
    returned as is. Terms read their keys in every step, and an OmegaConf attribute read costs
    microseconds (validation, interpolation) where a dataclass field costs nanoseconds."""
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        return cfg
    if OmegaConf.get_type(cfg) in (dict, None):
        return SimpleNamespace(**OmegaConf.to_container(cfg, resolve=True))
    return OmegaConf.to_object(cfg)


class Term(nn.Module, metaclass=ABCMeta):
    """Base class of every term. Subclasses set :attr:`Config`, :attr:`requires` and implement
    :meth:`forward`; those with features fill :attr:`student_features` / :attr:`teacher_features` in
    ``__init__``.

    Args:
        cfg: the term's resolved config (an instance-like object with the :attr:`Config` keys); kept as
            ``self.cfg`` in plain attributes (see :func:`plain_config`).
        ctx: the :class:`TermContext`.
    """

    #: the config dataclass (must derive from :class:`TermConfig`)
    Config: ClassVar[type] = TermConfig
    #: capabilities needed from the method (see :data:`CAPABILITIES`)
    requires: ClassVar[FrozenSet[str]] = frozenset()
    #: the roles of the players whose objective the term may be in (see :attr:`kdlab.methods.Method.objectives`)
    roles: ClassVar[FrozenSet[str]] = frozenset({"student"})
    #: old flat ``loss.<key>`` of the distill method -> this term's key (for a helpful error)
    legacy: ClassVar[Dict[str, str]] = {}

    def __init__(self, cfg: Any, ctx: TermContext) -> None:
        super().__init__()
        self.cfg = plain_config(cfg)
        self.term_name = ""  # set by the Objective: the key of this term in ``objective.<player>``
        self.weight = float(cfg.weight)
        self.student_features: List[str] = []
        self.teacher_features: List[str] = []

    @abstractmethod
    def forward(self, s: Outputs, t: Optional[Outputs], batch: Batch) -> torch.Tensor:
        """The unweighted scalar term for one batch (``t`` is None when the term needs no teacher)."""

    def teacher_derived(self, t: Outputs, batch: Batch) -> Dict[str, torch.Tensor]:
        """Per-example quantities this term computes from the teacher alone (``{key: [B, ...]}``, no
        graph), stored in ``t.derived["<term>/<key>"]`` and read back with :meth:`from_teacher`.

        Called right after the teacher's forward pass (``t.x`` still carries the teacher's graph when
        the term needs input gradients). Whatever a term derives here is a pure function of the
        example and the frozen teacher, so the teacher-output cache (:mod:`kdlab.games.teacher_cache`)
        stores it once for the whole transfer set. Default: nothing.
        """
        return {}

    def from_teacher(self, t: Outputs, key: str) -> torch.Tensor:
        """``t.derived["<this term>/<key>"]`` (see :meth:`teacher_derived`)."""
        return t.derived[f"{self.term_name}/{key}"]

    @property
    def teacher_cache_blocker(self) -> Optional[str]:
        """Why the teacher's outputs cannot be computed once for this term, or None. A term that needs
        input gradients differentiates the teacher through each step's input unless it derives what
        it needs in :meth:`teacher_derived`."""
        if "input_grad" in self.requires and "teacher" in self.requires and \
                type(self).teacher_derived is Term.teacher_derived:
            return f"term {self.term_name!r} differentiates the teacher through the input at every step"
        return None

    def expose(self, pairs: Sequence[Tuple[str, str]]) -> None:
        """Ask for the features of ``(student, teacher)`` pairs (:data:`OUTPUT` needs no hook)."""
        self.student_features = list(dict.fromkeys(a for a, _ in pairs if a != OUTPUT))
        self.teacher_features = list(dict.fromkeys(b for _, b in pairs if b != OUTPUT))

    def record(self) -> Dict[str, Any]:
        """Entries for the run's ``summary.json`` (e.g. a loaded feature network's identity and hash). Default: none."""
        return {}

    def set_epoch(self, epoch: int) -> None:
        """Told by the host method at the start of each epoch (0-based; also after a resume), for terms with a
        schedule in epochs (e.g. a burn-in). Default: nothing."""

    def players(self) -> Dict[str, Tuple[nn.Module, Any]]:
        """Modules trained by an optimizer of their own: ``{name: (module, optim config or None)}``
        (None: the run's ``optim`` section). Default: none."""
        return {}

    def bind(self, wrapped: Dict[str, nn.Module]) -> None:
        """Set by the method after device setup: this term's players as wrapped for training (Fabric/DDP)."""
        object.__setattr__(self, "_wrapped", dict(wrapped))

    def wrapped(self, name: str) -> nn.Module:
        """Player ``name`` as wrapped for training (the module itself before :meth:`bind`). Forward passes
        whose parameter gradients an :meth:`update` steps go through it, so DDP averages them across ranks."""
        got = getattr(self, "_wrapped", {}).get(name)
        return got if got is not None else self.players()[name][0]

    def update(self, s: Outputs, t: Optional[Outputs], batch: Batch,
               step: Callable[[str, torch.Tensor], None]) -> Dict[str, torch.Tensor]:
        """The term's own update after the student's step (``step(player name, loss)`` runs backward and
        that player's optimizer); returns named scalars for logging. Default: nothing."""
        return {}
