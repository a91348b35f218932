"""Engine callbacks: diagnostics that run inside the engine loop with read-only access to the players.

A :class:`Callback` is given in Python (``kdlab.runner.train(cfg, callbacks=[...])``, threaded through to
:meth:`kdlab.engine.Trainer.fit`); no run config key names one, but a compare or experiment spec attaches
registered ones by name (``callbacks:``, :mod:`kdlab.compare.analyses`). The loop calls, in order:

====================================  ===============  =====================================================
hook                                  ranks            when
====================================  ===============  =====================================================
``on_fit_start(view)``                every rank       after setup (and after loading ``last.ckpt`` on
                                                       ``--resume``), before the first epoch to run
``on_step_end(view, batch, step,      every rank       after each optimisation step (its NaN check and
logs)``                                                logging done); ``batch`` is this rank's shard
``on_epoch_end(view, epoch,           rank 0 only      after the epoch's validation and its ``last.ckpt``
metrics)``
``on_fit_end(view)``                  rank 0 only      after the last epoch, before the run's finalisation
                                                       (test metrics, export, ``summary.json``)
====================================  ===============  =====================================================

So files a callback writes in ``on_epoch_end``/``on_fit_end`` are written once; a callback that writes in
``on_fit_start``/``on_step_end`` checks ``view.is_global_zero``. Under DDP every rank agrees after each
hook whether one failed (one all-reduce of a flag per hook call, only when callbacks are given), so a
failure stops every rank instead of leaving the others waiting in the next collective.

What a callback cannot change (the engine guarantees it; ``tests/test_callbacks.py`` checks it): the
players' parameters, buffers (BatchNorm running statistics), ``.grad`` and optimizer state, the modules'
train/eval modes, the run's random streams (torch CPU/CUDA and Python ``random`` are saved before and
restored after every hook call, so a callback may draw random numbers and the run still ends with the
same weights as one without it), the grad mode, and the logged values (``logs`` holds copies). It sees
the players only through :class:`PlayersView`, which hands out clones. Not covered: Python attributes
that a module's own ``forward`` sets (none of kdlab's networks has any), and the process-global
settings a callback may change on purpose (threads, determinism flags).

An exception in a hook stops the run with :class:`CallbackError`, which names the callback, the hook, the
epoch and step, and the last good checkpoint (``last.ckpt`` of the last completed epoch is kept).
"""
from __future__ import annotations

import copy
import itertools
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import torch
from torch import nn

__all__ = ["Callback", "CallbackError", "CallbackList", "PlayerHandle", "PlayersView"]


class Callback:
    """Base class of engine callbacks; every hook is a no-op. Override the ones you need.

    A hook receives a :class:`PlayersView` (read-only: names, clones of state, functional calls) and must
    not hold on to the live players by other means. Hooks run synchronously between steps, so their cost
    adds to the run's wall time (a per-step hook should be cheap, or act every N steps).
    """

    #: how error messages name this callback (default: the class name)
    name: Optional[str] = None

    def on_fit_start(self, view: "PlayersView") -> None:
        """Every rank, once, before the first epoch to run (``view.epoch``/``view.step`` = where it starts:
        0/0, or the resumed checkpoint's epoch and step)."""

    def on_step_end(self, view: "PlayersView", batch: Any, step: int, logs: Mapping[str, Any]) -> None:
        """Every rank, after each optimisation step.

        Args:
            view: the players (``view.step == step``; ``view.epoch`` = the epoch in progress, 0-based).
            batch: the :class:`kdlab.data.Batch` this rank trained on, on the training device (the engine
                does not use it again; don't modify it all the same).
            step: optimisation steps completed so far (1-based: the ``step`` column of ``metrics.jsonl``).
            logs: read-only mapping of the step's named scalar losses (detached copies of what
                ``training_step`` returned, incl. ``loss``).
        """

    def on_epoch_end(self, view: "PlayersView", epoch: int, metrics: Mapping[str, float]) -> None:
        """Rank 0, after epoch ``epoch`` (0-based) was validated and its ``last.ckpt`` written
        (``view.epoch == epoch + 1``: epochs completed).

        ``metrics``: read-only mapping of the epoch's last logged training values (``train/<loss>``,
        ``lr/<player>``, ``throughput`` in samples/s) and its validation metrics (e.g. ``val/acc`` in %).
        """

    def on_fit_end(self, view: "PlayersView") -> None:
        """Rank 0, once, after the last epoch (not called when the run stops on an error)."""


class CallbackError(RuntimeError):
    """A callback raised; the run stopped. The message names the callback, the hook, the epoch and step,
    the original error and the last good checkpoint (the original exception is the ``__cause__``)."""


def callback_name(cb: Any) -> str:
    """How messages name callback ``cb``: its ``name`` attribute, else its class name."""
    return getattr(cb, "name", None) or type(cb).__name__


def _clone(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


@contextmanager
def _mode(module: nn.Module, train: Optional[bool]) -> Iterator[None]:
    """``module`` in train (True) or eval (False) mode for the block, every submodule's own flag restored
    afterwards (also on errors); None leaves the modes as they are."""
    if train is None:
        yield
        return
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.train(train)
        yield
    finally:
        for m, flag in flags:
            m.training = flag


class PlayerHandle:
    """Read-only handle of one network of a method (a trained player or a frozen network).

    It holds no copy: each call clones what it hands out, so nothing obtained from it aliases the live
    tensors. Use it to evaluate the network, take gradients with respect to (cloned) parameters or inputs,
    or save a copy; none of that reaches the live weights, their ``.grad``, the optimizer or BatchNorm's
    running statistics.
    """

    def __init__(self, name: str, module: nn.Module, kind: str) -> None:
        """``module``: the plain network (already unwrapped from Fabric/DDP); ``kind``: "player" or "frozen"."""
        self.name, self.kind = name, kind
        self._module = module

    def __repr__(self) -> str:
        return f"PlayerHandle({self.name!r}, {self.kind}, {type(self._module).__name__})"

    @property
    def training(self) -> bool:
        """Whether the live network is in train mode (what :meth:`functional` uses by default)."""
        return self._module.training

    @property
    def device(self) -> torch.device:
        """The device of the network's first parameter or buffer (CPU for a network without tensors)."""
        first = next(itertools.chain(self._module.parameters(), self._module.buffers()), None)
        return first.device if first is not None else torch.device("cpu")

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """Detached clones of the network's ``state_dict`` (parameters and persistent buffers)."""
        return {k: _clone(v) for k, v in self._module.state_dict().items()}

    def parameters(self) -> Dict[str, torch.Tensor]:
        """``{name: clone}`` of every parameter: leaf tensors that require grad exactly where the live
        parameter does, so ``torch.autograd.grad(out, list(params.values()))`` works on them."""
        return {k: _clone(p).requires_grad_(p.requires_grad) for k, p in self._module.named_parameters()}

    def buffers(self) -> Dict[str, torch.Tensor]:
        """``{name: clone}`` of every buffer (BatchNorm running statistics, counters, memories)."""
        return {k: _clone(b) for k, b in self._module.named_buffers()}

    def functional(self, *args: Any, params: Optional[Mapping[str, torch.Tensor]] = None,
                   buffers: Optional[Mapping[str, torch.Tensor]] = None, train: Optional[bool] = None,
                   **kwargs: Any) -> Any:
        """The network's output on ``args``/``kwargs``, computed with
        ``torch.func.functional_call(network, {**params, **buffers}, args, kwargs)``.

        Args:
            args, kwargs: the network's inputs (e.g. ``x [B, C, H, W]`` on :attr:`device`).
            params: parameters to use (default: fresh :meth:`parameters` clones; names missing from a given
                dict get fresh clones too, never the live tensors). Pass the same dict to several calls to take
                gradients with respect to it.
            buffers: buffers to use (default, and for missing names: fresh :meth:`buffers` clones; a train-mode
                BatchNorm updates these, never the live ones).
            train: True/False runs the network in train/eval mode for this call only; None (default) in its
                live mode, i.e. as the method's own step computes it.

        Returns:
            What the network returns (logits ``[B, K]``; a :class:`kdlab.terms.Student` returns
            ``Outputs``), with a graph to ``params`` (and to inputs that require grad).
        """
        p, b = dict(params or {}), dict(buffers or {})
        p.update({k: _clone(v).requires_grad_(v.requires_grad) for k, v in self._module.named_parameters() if k not in p})
        b.update({k: _clone(v) for k, v in self._module.named_buffers() if k not in b})
        with _mode(self._module, train):
            return torch.func.functional_call(self._module, {**p, **b}, args, kwargs)

    __call__ = functional

    def copy(self) -> nn.Module:
        """An independent deep copy of the network (e.g. to save it with :func:`kdlab.engine.save_classifier`);
        changing it changes nothing in the run."""
        return copy.deepcopy(self._module)


class PlayersView:
    """Read-only view of a method's players for callbacks.

    Attributes (read-only): ``method_name`` (``cfg.method``), ``cfg`` (a read-only copy of the run config),
    ``run_dir`` (``runs/<name>``; rank 0 writes there), ``epoch`` (epochs completed = the 0-based index of
    the epoch in progress), ``step`` (optimisation steps completed), ``rank``, ``world_size``,
    ``is_global_zero``.

    Args:
        method: a built :class:`kdlab.methods.Method` (its ``players`` and ``frozen`` dicts are read).
        cfg: the run config (default ``method.cfg``); an OmegaConf config is copied and made read-only.
        run_dir: the run directory (None when there is none).
        rank, world_size: this process's global rank and the number of processes.
    """

    def __init__(self, method: Any, cfg: Any = None, run_dir: Optional[Path] = None, *, rank: int = 0,
                 world_size: int = 1) -> None:
        from omegaconf import DictConfig, OmegaConf

        cfg = method.cfg if cfg is None else cfg
        if isinstance(cfg, DictConfig):
            cfg = copy.deepcopy(cfg)
            OmegaConf.set_readonly(cfg, True)
        self._method, self._cfg = method, cfg
        self._run_dir = Path(run_dir) if run_dir is not None else None
        self._rank, self._world = int(rank), int(world_size)
        self._epoch = self._step = 0

    def _at(self, epoch: int, step: int) -> None:
        """Set the loop's position (the engine calls this; callbacks don't)."""
        self._epoch, self._step = int(epoch), int(step)

    method_name = property(lambda self: str(getattr(self._cfg, "method", type(self._method).__name__)))
    cfg = property(lambda self: self._cfg)
    run_dir = property(lambda self: self._run_dir)
    epoch = property(lambda self: self._epoch)
    step = property(lambda self: self._step)
    rank = property(lambda self: self._rank)
    world_size = property(lambda self: self._world)
    is_global_zero = property(lambda self: self._rank == 0)

    def names(self) -> List[str]:
        """The trained players' names (e.g. KDGAN: ``classifier``, ``teacher``, ``discriminator``)."""
        return list(self._method.players)

    def frozen_names(self) -> List[str]:
        """The frozen networks' names (e.g. a distillation method's ``teacher``)."""
        return list(getattr(self._method, "frozen", {}) or {})

    def module(self, name: str) -> PlayerHandle:
        """The :class:`PlayerHandle` of trained player ``name``.

        Raises:
            KeyError: no player of that name (lists the players and the frozen networks).
        """
        if name not in self._method.players:
            raise KeyError(self._unknown(name, "player"))
        return PlayerHandle(name, _unwrap(self._method.players[name]), "player")

    def frozen(self, name: str) -> PlayerHandle:
        """The :class:`PlayerHandle` of frozen network ``name``.

        Raises:
            KeyError: no frozen network of that name (lists both kinds of names).
        """
        frozen = getattr(self._method, "frozen", {}) or {}
        if name not in frozen:
            raise KeyError(self._unknown(name, "frozen network"))
        return PlayerHandle(name, _unwrap(frozen[name]), "frozen")

    def _handle(self, name: str) -> PlayerHandle:
        return self.frozen(name) if name not in self._method.players and name in self.frozen_names() else self.module(name)

    def state_dict(self, name: str) -> Dict[str, torch.Tensor]:
        """Detached clones of player (or frozen network) ``name``'s state_dict. Raises KeyError as :meth:`module`."""
        return self._handle(name).state_dict()

    def functional(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``self.module(name).functional(*args, **kwargs)`` (frozen networks too); see
        :meth:`PlayerHandle.functional`. Raises KeyError as :meth:`module`."""
        return self._handle(name).functional(*args, **kwargs)

    def _unknown(self, name: str, kind: str) -> str:
        return (f"no {kind} named {name!r} in method {self.method_name!r}; players: {', '.join(self.names()) or '(none)'}; "
                f"frozen networks: {', '.join(self.frozen_names()) or '(none)'}")


def _unwrap(module: nn.Module) -> nn.Module:
    from kdlab.engine.loop import unwrap

    return unwrap(module)


@contextmanager
def isolated() -> Iterator[None]:
    """Run a block without effect on the run's random streams (torch CPU and CUDA, Python ``random``) and
    grad mode: both are saved before and restored after (also on errors)."""
    from kdlab.engine.rng import rng_state, set_rng_state

    state, grad = rng_state(), torch.is_grad_enabled()
    try:
        yield
    finally:
        set_rng_state(state)
        torch.set_grad_enabled(grad)


def read_only(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only mapping of detached copies of ``values`` (tensors cloned, other values as they are)."""
    return MappingProxyType({k: _clone(v) if isinstance(v, torch.Tensor) else v for k, v in values.items()})


class CallbackList:
    """Calls the callbacks of one :meth:`kdlab.engine.Trainer.fit` (the engine's side of this module).

    Args:
        callbacks: the :class:`Callback` s, called in this order.
        view: the :class:`PlayersView` handed to them (its position is set by :meth:`at`); None without
            callbacks.
        fabric: the launched Fabric (rank, world size, the all-reduce of failure flags).
        last_ckpt: the run's ``last.ckpt`` path (named in error messages).
    """

    def __init__(self, callbacks: Sequence[Callback], view: PlayersView, fabric: Any, last_ckpt: Path) -> None:
        self.callbacks, self.view, self.fabric, self.last_ckpt = list(callbacks), view, fabric, Path(last_ckpt)

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def at(self, epoch: int, step: int) -> None:
        """Tell the view where the loop is (epochs and steps completed); no view without callbacks."""
        if self.view is not None:
            self.view._at(epoch, step)

    def fit_start(self) -> None:
        """Every rank: each callback's ``on_fit_start``. Raises CallbackError (see :meth:`_dispatch`)."""
        self._dispatch("on_fit_start", every_rank=True)

    def step_end(self, batch: Any, step: int, logs: Mapping[str, Any]) -> None:
        """Every rank: ``on_step_end`` with the step's batch, its 1-based number and read-only copies of its
        losses. Raises CallbackError."""
        self._dispatch("on_step_end", True, batch, step, read_only(logs))

    def epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Rank 0: ``on_epoch_end`` with the 0-based epoch and a read-only copy of ``metrics`` (the other ranks
        only take part in the failure check). Raises CallbackError."""
        self._dispatch("on_epoch_end", False, epoch, MappingProxyType(dict(metrics)))

    def fit_end(self) -> None:
        """Rank 0: ``on_fit_end`` (the other ranks only take part in the failure check). Raises CallbackError."""
        self._dispatch("on_fit_end", every_rank=False)

    def _dispatch(self, hook: str, every_rank: bool, *args: Any) -> None:
        """Call ``hook`` of every callback (on this rank if it runs there), each isolated; then agree across
        ranks whether one failed.

        Raises:
            CallbackError: a callback raised here, or on another rank.
        """
        if not self.callbacks:
            return
        error: Optional[CallbackError] = None
        if every_rank or self.fabric.is_global_zero:
            for cb in self.callbacks:
                try:
                    with isolated():
                        getattr(cb, hook)(self.view, *args)
                except Exception as exc:  # noqa: BLE001 (any failure of user code stops the run, named)
                    error = CallbackError(self._message(cb, hook, exc))
                    error.__cause__ = exc
                    break
        if self.fabric.world_size > 1:
            flag = torch.tensor(float(error is not None), device=self.fabric.device)
            if float(self.fabric.all_reduce(flag, reduce_op="sum")) > 0 and error is None:
                error = CallbackError(f"a callback failed in {hook} on another rank at epoch {self.view.epoch + 1}, "
                                      f"step {self.view.step} (that rank's error names it); the run stopped; "
                                      + self._kept())
        if error is not None:
            raise error

    def _message(self, cb: Any, hook: str, exc: BaseException) -> str:
        first = str(exc).splitlines()[0] if str(exc) else ""
        epoch = self.view.epoch if hook in ("on_epoch_end", "on_fit_end") else self.view.epoch + 1  # 1-based
        return (f"callback {callback_name(cb)} failed in {hook} at epoch {epoch}, step {self.view.step}: "
                f"{type(exc).__name__}: {first}; the run stopped; {self._kept()}")

    def _kept(self) -> str:
        return (f"the last good checkpoint is {str(self.last_ckpt)!r} (continue with --resume)" if self.last_ckpt.is_file()
                else "no epoch had completed, so there is no checkpoint")
