"""The method interface: a training game that owns its players and their optimizers.

A method is registered by name in :data:`METHODS` and declares the schemas of its config sections:
``players`` (a nested dataclass ``Config``: the other players' architectures, optimizers, update ratios
and the game's settings), ``eval`` (``Eval``) and which of its players take an ``objective`` of terms
(``objectives``, with ``default_objective``). The engine (:class:`kdlab.engine.Trainer`) calls
:meth:`Method.setup` once, then :meth:`Method.training_step` per batch and
:meth:`Method.on_epoch_end` per epoch; the method does its own ``fabric.backward`` and optimizer
steps, so games that alternate several optimizers (GANs, KDGAN) fit the same loop.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from kdlab.config import ConfigError, EvalConfig
from kdlab.data.batch import Batch
from kdlab.data.transfer import TRANSFER_LABELLED, TRANSFER_SYNTH
from kdlab.engine import build_optimizer, build_scheduler, unwrap
from kdlab.engine.checkpoint import classifier_metadata
from kdlab.engine.speed import compile_networks, fabric_wraps, setup_player, to_channels_last
from kdlab.metrics import evaluate_accuracy
from kdlab.models.batch_stats import ranked_layers
from kdlab.registry import Registry
from kdlab.terms import Objective, Outputs, Student, TermContext, build_objective

METHODS = Registry("method")


def export_tensors(model: nn.Module, copy: bool = True) -> Dict[str, torch.Tensor]:
    """``model``'s state_dict detached: CPU copies (``copy``), else the live tensors themselves."""
    if copy:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {k: v.detach() for k, v in model.state_dict().items()}

#: student kinds (``Method.kind``) and the roles a method plays (``Method.role``): the CLI dispatches on them
KINDS = ("classifier", "generator")
ROLES = ("teacher", "student")


class Method(ABC):
    """Base class. Subclasses build their players in ``__init__`` via :meth:`add_player`.

    Args:
        cfg: the full run config (``kdlab.config.RunConfig`` as a DictConfig).
        spec: the data set's :class:`kdlab.data.DataSpec` (classes, channels, image size).
    """

    @dataclass
    class Config:
        """No method-specific keys (the ``players`` section)."""

    #: the ``eval`` section's schema (:class:`kdlab.config.EvalConfig` or a subclass)
    Eval: ClassVar[type] = EvalConfig
    #: the players trained by an objective of terms (``objective.<player>``) -> their role (the roles a
    #: term serves: :attr:`kdlab.terms.Term.roles`)
    objectives: ClassVar[Dict[str, str]] = {"student": "student"}
    #: each objective player's default terms (merged under the user's; a weight of 0 removes one)
    default_objective: ClassVar[Dict[str, Dict[str, Any]]] = {}
    #: old ``loss.<key>`` -> its new place, for keys that moved elsewhere than ``players.<key>`` / ``eval.<key>``
    moved: ClassVar[Dict[str, str]] = {}
    #: why the method cannot train on ``data.transfer: synth`` (None: it can, through :meth:`build_synthesizer`)
    synth_unsupported: ClassVar[Optional[str]] = "its student does not learn from a classifier's transfer images"
    #: what the method trains: a ``classifier`` or a ``generator``; as a ``teacher`` or a ``student``
    kind: str = "classifier"
    role: str = "student"
    #: True when the method produces its own batches and can run data-free (``data.transfer=none``)
    synthesizes: bool = False
    #: the validation metric that selects the best checkpoint, and whether higher is better
    selection_key: str = "val/acc"
    selection_mode: str = "max"
    #: file stem of the exported weights (``<export_name>.safetensors``)
    export_name: str = "model"
    #: why ``trainer.teacher_cache=on`` cannot apply to this method (None: it can, see :meth:`on_fit_start`)
    teacher_cache_unsupported: Optional[str] = ("has no frozen teacher evaluated on a fixed transfer set (its teacher "
                                                "trains, or its inputs are drawn anew every step)")

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        """``cfg``: the resolved run config; ``spec``: the data set's :class:`kdlab.data.DataSpec`;
        ``transfer``: the transfer source's :class:`kdlab.data.TransferInfo` (None when built without data)."""
        self.cfg = cfg
        self.spec = spec
        self.transfer = transfer
        self.fabric = None
        self._plain_backward = False  # set by setup: fabric.backward would only call loss.backward()
        self.players: Dict[str, nn.Module] = {}
        self.optimizers: Dict[str, Optional[torch.optim.Optimizer]] = {}
        self.schedulers: Dict[str, Any] = {}
        self.frozen: Dict[str, nn.Module] = {}
        self.synthesizer: Any = None  # a kdlab.games.synthesizer.Synthesizer with data.transfer: synth
        if getattr(cfg.trainer, "teacher_cache", "auto") == "on" and self.teacher_cache_unsupported:
            raise ConfigError(f"trainer.teacher_cache=on: method {cfg.method!r} {self.teacher_cache_unsupported}; "
                              "accepted here: trainer.teacher_cache=auto or off")

    # -- building ----------------------------------------------------------------------------
    def add_player(self, name: str, module: nn.Module, optim_cfg: Any = None) -> None:
        """Register a trainable module with an optimizer/schedule from ``optim_cfg`` (default ``cfg.optim``).

        Raises:
            ValueError: a player of that name exists already.
        """
        if name in self.players:
            raise ValueError(f"player {name!r} is registered twice")
        optim_cfg = optim_cfg if optim_cfg is not None else self.cfg.optim
        params = [p for p in module.parameters() if p.requires_grad]
        opt = build_optimizer(params, optim_cfg)
        self.players[name] = module
        self.optimizers[name] = opt
        self.schedulers[name] = build_scheduler(opt, optim_cfg, self.cfg.trainer.epochs)

    def add_frozen(self, name: str, module: nn.Module) -> None:
        """Register a fixed network (e.g. the teacher): eval mode, no gradients, not checkpointed."""
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        self.frozen[name] = module

    # -- the student objective (terms) ---------------------------------------------------------
    def term_context(self, student: nn.Module, teacher: Optional[nn.Module], *, kind: Optional[str] = None,
                     student_input: Optional[Tuple[int, ...]] = None, teacher_input: Optional[Tuple[int, ...]] = None,
                     input_grad: bool = True) -> TermContext:
        """What the terms of this method may use: the teacher's outputs (when there is a teacher), logits
        or images (by ``kind``), named features, labels (a labelled transfer set) and input gradients
        (unless ``input_grad`` is False or the teacher sees a privileged view), row indices (when
        the transfer source's batches carry them) and ground-truth images (a paired translation task).
        A method with a discriminator terms may read adds ``critic`` itself."""
        kind = kind or self.kind
        spec = self.spec
        image = (spec.in_channels, spec.image_size, spec.image_size)
        provides = {"features", "logits" if kind == "classifier" else "images"}
        why_not: Dict[str, str] = {}
        if teacher is not None:
            provides.add("teacher")
        else:
            why_not["teacher"] = "it has no teacher"
        transfer = self.cfg.data.transfer
        if kind == "classifier" and (transfer or TRANSFER_LABELLED) == TRANSFER_LABELLED:
            provides.add("labels")
        else:
            why_not["labels"] = ("its student batches hold synthetic images, which have no labels" if transfer == TRANSFER_SYNTH
                                 else f"data.transfer = {transfer!r} has no labels" if kind == "classifier"
                                 else "a generator student has no labels")
        if input_grad and kind == "classifier" and not self.cfg.data.privileged:
            provides.add("input_grad")
        elif self.cfg.data.privileged:
            why_not["input_grad"] = f"with data.privileged = {self.cfg.data.privileged!r} teacher and student see different inputs"
        else:
            why_not["input_grad"] = "its inputs are not images shared by teacher and student"
        if transfer == TRANSFER_SYNTH:
            why_not["index"] = "its student batches hold synthetic images, which are no rows of a transfer set"
        elif self.transfer is not None and self.transfer.indexed:
            provides.add("index")
        else:
            why_not["index"] = ("its transfer source was not given to it" if self.transfer is None
                                else f"the transfer source {transfer!r} gives no row indices")
        pairing = getattr(spec, "pairing", None)
        if pairing == "paired":
            provides.add("targets")
        else:
            why_not["targets"] = (f"data set {spec.name!r} is an unpaired translation task (no ground truth per input)"
                                  if pairing == "unpaired" else f"data set {spec.name!r} is no paired translation task")
        why_not["critic"] = "it exposes no discriminator to the terms (methods gan-compression and i2i-distill do, with an objective.student.gan term)"
        return TermContext(method=self.cfg.method, kind=kind, student=student, teacher=teacher, spec=spec,
                           student_input=tuple(student_input or image), teacher_input=tuple(teacher_input or image),
                           provides=frozenset(provides), why_not=why_not,
                           num_classes=spec.num_classes if kind == "classifier" else None,
                           transfer_size=self.transfer.size if self.transfer is not None else None,
                           steps_per_epoch=(-(-self.transfer.size // int(self.cfg.data.batch_size))
                                            if self.transfer is not None else None))

    def build_objective(self, ctx: TermContext, terms: Any = None, player: str = "student") -> Objective:
        """The objective of ``objective.<player>`` (or ``terms``) in context ``ctx`` (:func:`kdlab.terms.build_objective`)."""
        return build_objective(self.cfg.objective[player] if terms is None else terms, ctx, player)

    def plain_objective(self, ctx: TermContext, player: str, hint: str = "") -> Objective:
        """``objective.<player>`` for a player that is no :class:`kdlab.terms.Student` (a teacher in training, a
        generator, a discriminator): built in context ``ctx`` and checked.

        Raises:
            ConfigError: no term of weight > 0 (``hint`` completes the message), or terms with trainable parts of
                their own (only a student's objective carries them, in its optimizer).
        """
        objective = self.build_objective(ctx, player=player)
        if not len(objective):
            raise ConfigError(f"objective.{player} has no term with a weight > 0: the {player} would not train{hint}")
        if any(True for _ in objective.parameters()) or objective.players():
            raise ConfigError(f"objective.{player}: terms with trainable parts of their own are only supported in a "
                              "student's objective")
        return objective

    def add_student(self, name: str, net: nn.Module, objective: Objective, optim_cfg: Any = None,
                    extra_features: Sequence[str] = ()) -> Objective:
        """Register the player ``name`` = :class:`kdlab.terms.Student` (``net`` + the objective's trainable
        modules, one optimizer; ``extra_features`` also exposed, e.g. for a peer's terms) and each term's
        own players as ``<name>.<term>.<player>``. Returns the objective."""
        self.add_player(name, Student(net, objective, extra_features), optim_cfg)
        for pname, (module, ocfg) in objective.players().items():
            self.add_player(f"{name}.{pname}", module, ocfg)
        return objective

    def student_terms(self, name: str, s: Outputs, t: Optional[Outputs], batch: Batch) -> Dict[str, torch.Tensor]:
        """The weighted terms of player ``name``'s objective (``{"term": value, ..., "loss": sum}``)."""
        return unwrap(self.players[name]).objective.forward(s, t, batch)  # no hooks on objectives: skip __call__

    def update_terms(self, name: str, s: Outputs, t: Optional[Outputs], batch: Batch) -> Dict[str, torch.Tensor]:
        """The own updates of player ``name``'s terms (after the student's step)."""
        objective = unwrap(self.players[name]).objective
        if not objective.has_updates:
            return {}
        return objective.update(s, t, batch, lambda p, loss: self.step_optimizer(f"{name}.{p}", loss))

    def setup(self, fabric: Any) -> None:
        """Move players to Fabric's device (wrapped by Fabric where that changes anything: DDP, mixed
        precision; see :func:`kdlab.engine.speed.setup_player`) and frozen nets to the device."""
        self.fabric = fabric
        self._plain_backward = not fabric_wraps(fabric)
        tcfg = self.cfg.trainer
        for name in list(self.players):
            if getattr(fabric, "world_size", 1) > 1:  # before DDP wraps them (DDP keeps the module it is given)
                self.players[name] = ranked_layers(self.players[name], bool(tcfg.sync_batchnorm),
                                                   fabric.device.type == "cuda")
            module, opt = setup_player(fabric, self.players[name], self.optimizers[name])
            self.players[name], self.optimizers[name] = module, opt
        for name, module in self.frozen.items():
            self.frozen[name] = module.to(fabric.device)
        for name, module in self.players.items():  # terms call their own players through the wrappers
            inner = unwrap(module)
            if isinstance(inner, Student):
                prefix = f"{name}."
                inner.objective.bind({k[len(prefix):]: m for k, m in self.players.items() if k.startswith(prefix)})
        if tcfg.channels_last:
            for module in list(self.players.values()) + list(self.frozen.values()):
                to_channels_last(unwrap(module))
        self.compiled = compile_networks(self.compile_targets(), tcfg.compile)

    def compile_targets(self) -> List[Tuple[str, nn.Module, Optional[str]]]:
        """``(name, network, reason to stay eager or None)`` of the networks ``trainer.compile`` may compile:
        each student network and the frozen teacher (other players, e.g. discriminators and term players,
        stay eager)."""
        students = [(n, unwrap(m)) for n, m in self.players.items() if isinstance(unwrap(m), Student)]
        grads = "input gradients need double backward" if any(s.objective.needs_input_grad for _, s in students) else None
        out: List[Tuple[str, nn.Module, Optional[str]]] = [
            (f"{n}.net", s.net, grads or ("terms read its features through hooks" if s.feature_names else None))
            for n, s in students]
        if "teacher" in self.frozen:
            hooked = any(s.objective.teacher_features for _, s in students)
            out.append(("teacher", self.frozen["teacher"], grads or ("terms read its features through hooks" if hooked else None)))
        return out

    def on_fit_start(self, train_set: Any, run_dir: Any, batch_sizes: Sequence[int]) -> None:
        """Called by the loop after :meth:`setup`, before the first epoch, with the transfer set, the run
        directory and every batch size the training loader yields (e.g. to build a teacher-output
        cache). Default: nothing."""

    def build_synthesizer(self, teacher: nn.Module, student: Any) -> None:
        """With ``data.transfer: synth``: build the synthesizer (its players are registered on this method)
        whose images replace the transfer batches (:meth:`step`); ``student`` returns the student network."""
        if self.cfg.data.transfer != TRANSFER_SYNTH:
            return
        from kdlab.games.synthesizer import Synthesizer

        self.synthesizer = Synthesizer(self, teacher, student)

    # -- the game ----------------------------------------------------------------------------
    def step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        """What the engine calls per batch: :meth:`training_step`, on the synthesizer's batch when there is
        one (after the syntheses due at ``step``; their losses are logged beside the method's)."""
        if self.synthesizer is None:
            return self.training_step(batch, step)
        logs = self.synthesizer.step(batch, step)
        logs.update(self.training_step(self.synthesizer.student_batch(batch), step))
        return logs

    @abstractmethod
    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        """One optimisation step on a :class:`kdlab.data.Batch` (``x`` None in data-free runs); returns
        named scalar losses incl. ``loss`` (the NaN check watches it)."""

    @abstractmethod
    def eval_model(self) -> nn.Module:
        """The network that is validated, tested and exported (unwrapped from Fabric/DDP)."""

    def validate(self, loader: Any, device: Any) -> Dict[str, float]:
        """Validation metrics logged each epoch; must hold :attr:`selection_key`.

        Default: top-1 accuracy (percent) of :meth:`eval_model` on ``loader``.
        """
        return {"val/acc": evaluate_accuracy(self.eval_model(), loader, device=device)}

    def selectable(self, epoch: int) -> bool:
        """Whether the weights after ``epoch`` (0-based) are a candidate for the best checkpoint. Default: every
        epoch. A game whose exported network does not train in some epochs (KDGAN's d and t epochs) says no for
        those, so that every method selects over its network's own training epochs (the same rule for all rows)."""
        return True

    def export_state(self, *, copy: bool = True, **metadata: Any) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
        """(CPU copy of :meth:`eval_model`'s state_dict, metadata to rebuild it) for checkpoints/export.

        ``copy=False``: the state_dict's own tensors (detached views of the live weights, on their
        device) instead of copies, for a caller that serialises them at once beside the method's state:
        ``torch.save`` then stores each shared tensor once (``last.ckpt``).

        Default: a registry classifier (see :func:`kdlab.engine.checkpoint.classifier_metadata`).
        """
        model = self.eval_model()
        return export_tensors(model, copy), classifier_metadata(model, **metadata)

    def backward(self, loss: torch.Tensor) -> None:
        """``fabric.backward(loss)``; ``loss.backward()`` itself where Fabric wraps nothing (one process, one
        device, fp32: :func:`kdlab.engine.speed.fabric_wraps`), where Fabric's backward runs its precision
        plugin's no-op hooks around that same call (~6 us a step, a few percent of a small model's step)."""
        if self._plain_backward:
            loss.backward()
        else:
            self.fabric.backward(loss)

    def step_optimizer(self, name: str, loss: torch.Tensor) -> None:
        """zero_grad, :meth:`backward`, step for player ``name``."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.backward(loss)
        opt.step()

    def step_optimizers(self, names: Sequence[str], loss: torch.Tensor) -> None:
        """One :meth:`backward` of ``loss`` and a step of each player in ``names`` (players that one loss
        trains together, e.g. CycleGAN's two generators: Adam per player = one Adam over all)."""
        opts = [self.optimizers[n] for n in names]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        self.backward(loss)
        for opt in opts:
            opt.step()

    def train(self) -> None:
        for module in self.players.values():
            module.train()
        for module in self.frozen.values():
            module.eval()

    def on_epoch_end(self, epoch: int) -> None:
        for sched in self.schedulers.values():
            if sched is not None:
                sched.step()
        if self.synthesizer is not None and (self.fabric is None or self.fabric.is_global_zero):
            from pathlib import Path

            self.synthesizer.save_grid(Path(self.cfg.out_dir) / self.cfg.name, epoch)

    def learning_rates(self) -> Dict[str, float]:
        return {n: float(o.param_groups[0]["lr"]) for n, o in self.optimizers.items() if o is not None}

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {
            "players": {n: unwrap(m).state_dict() for n, m in self.players.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items() if o is not None},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items() if s is not None},
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for n, m in self.players.items():
            unwrap(m).load_state_dict(state["players"][n])
        for n, o in self.optimizers.items():
            if o is not None:
                o.load_state_dict(state["optimizers"][n])
        for n, s in self.schedulers.items():
            if s is not None:
                s.load_state_dict(state["schedulers"][n])

    def finalize(self, run_dir: Any, data: Any, result: Any, device: Any) -> Dict[str, Any]:
        """After training (rank 0): test, export the selected weights, return ``summary.json`` entries.

        Args:
            run_dir: the run directory. data: :class:`kdlab.data.Datasets`.
            result: :class:`kdlab.engine.FitResult` (``best_state`` = selected weights).

        Default: a classifier (:func:`kdlab.games.evaluation.classifier_finalize`).
        """
        from kdlab.games.evaluation import classifier_finalize

        return classifier_finalize(self, run_dir, data, result, device)

    def summary_extra(self) -> Dict[str, Any]:
        """Method-specific entries for ``summary.json`` (e.g. the teacher's identity)."""
        return {}
