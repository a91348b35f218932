"""The training loop every method shares, on Lightning Fabric.

A *method* (see :mod:`kdlab.methods`) owns its players and optimizers and implements
``training_step(batch, step) -> dict of scalar tensors`` (it calls ``fabric.backward`` and steps
its own optimizers, so multi-optimizer games fit). The :class:`Trainer` does the rest: devices,
precision and DDP through Fabric, seeding, the data order, the rich progress bar, ``metrics.jsonl``
and TensorBoard, validation and best-checkpoint selection (on the validation split, never the test
split), atomic ``last.ckpt``/``best.ckpt``, ``--resume`` and the stop on a non-finite loss, and the callbacks (:mod:`kdlab.engine.callbacks`: read-only
diagnostics per step and per epoch).

Resume granularity is the epoch: ``last.ckpt`` is written after every epoch with the method state
(weights, optimizers, schedules), the RNG states and the best-so-far record, and the shuffling
order of epoch ``e`` is a pure function of ``(seed, e)``, so a resumed run ends with the same
weights as an uninterrupted one.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from kdlab.data import make_loader
from kdlab.engine.callbacks import CallbackList, PlayersView
from kdlab.engine.checkpoint import WeightsError, load_checkpoint
from kdlab.engine.writer import CheckpointWriter
from kdlab.engine.interrupt import StepBoundaryInterrupt, TrainingInterrupted
from kdlab.engine.logging import MetricsLog, ProgressBar, format_values
from kdlab.engine.optim import apply_schedules, schedules
from kdlab.engine.rundir import resume_changes
from kdlab.engine.rng import gather_rng, rng_state, set_rng_bytes, set_rng_state
from kdlab.engine.speed import channels_last_batch, nvml_check_where_useful
from kdlab.engine.train_data import train_loader

CKPT_FORMAT = "kdlab-run-1"


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stopped and ``last.ckpt`` is the last good state."""


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns. ``val_best``/``val_last`` are the method's selection metric
    (``method.selection_key``, e.g. ``val/acc`` in percent); ``None`` without a validation split.
    ``wall_time_s``: seconds in the training loop, a resumed run's earlier segments included (up to the
    checkpoint it resumed from: ``earlier_time_s``); ``resumed_from_epoch``: the epoch a resumed run started at
    (0: not resumed)."""

    epochs_run: int
    best_epoch: Optional[int]
    val_best: Optional[float]
    val_last: Optional[float]
    selection_key: str = "val/acc"
    final_losses: Dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    resumed_from_epoch: int = 0
    earlier_time_s: float = 0.0
    best_state: Optional[Dict[str, torch.Tensor]] = None


def make_fabric(trainer_cfg: Any, run_dir: Optional[Path] = None):
    """A launched :class:`lightning_fabric.Fabric` from a ``trainer`` config section.

    TensorBoard events go to ``run_dir/tb`` when ``trainer.tensorboard`` is true.
    """
    from lightning_fabric import Fabric

    nvml_check_where_useful()
    loggers = []
    if run_dir is not None and trainer_cfg.tensorboard:
        from lightning_fabric.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(root_dir=str(run_dir), name="tb", version=""))
    devices = trainer_cfg.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if trainer_cfg.threads:
        torch.set_num_threads(int(trainer_cfg.threads))
    fabric = Fabric(
        accelerator=trainer_cfg.accelerator,
        devices=devices,
        strategy=trainer_cfg.strategy,
        num_nodes=trainer_cfg.num_nodes,
        precision=trainer_cfg.precision,
        loggers=loggers,
    )
    fabric.launch()
    return fabric


class Trainer:
    """Runs a method for ``cfg.trainer.epochs`` epochs and keeps the run directory's checkpoints.

    Args:
        cfg: the full run config (uses ``trainer``, ``data``, ``seed``).
        run_dir: ``runs/<name>``; ``checkpoints/``, ``metrics.jsonl`` and ``tb/`` go there.
        fabric: a launched Fabric (:func:`make_fabric`).
        config_yaml: ``kdlab.config.to_yaml(cfg)`` when the caller has it already (the runner does: its
            run-directory check reads it), so a run serialises its config once; None computes it in ``fit``.
    """

    def __init__(self, cfg: Any, run_dir: Path, fabric: Any, config_yaml: Optional[str] = None) -> None:
        self.cfg = cfg
        self.config_yaml = config_yaml
        self.tcfg = cfg.trainer
        self.run_dir = Path(run_dir)
        self.fabric = fabric
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.is_zero = fabric.is_global_zero
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", fabric, enabled=self.is_zero)
        self._writer = CheckpointWriter()  # fit() opens its own; this one serves calls outside fit

    # -- checkpoints -------------------------------------------------------------------------
    def _export(self, method: Any, copy: bool = True) -> tuple:
        return method.export_state(copy=copy, data=self.cfg.data.name)

    def _save_last(self, method: Any, epoch: int, step: int, best: Dict[str, Any], config_yaml: str,
                   train_time_s: float = 0.0) -> None:
        # "model" holds the live tensors that "method" holds too: torch.save writes each storage once
        model_state, meta = self._export(method, copy=False)
        state = {
            "format": CKPT_FORMAT,
            "epoch": epoch,
            "global_step": step,
            "train_time_s": train_time_s,  # the training loop's seconds up to here, earlier segments included
            "method": method.state_dict(),
            "best": best,
            "rng": rng_state(),
            "rng_ranks": gather_rng(self.fabric),  # DDP: each rank's own stream (None for one process)
            "config": config_yaml,
            "model": model_state,
            "model_meta": meta,
        }
        if self.is_zero:
            self._writer.submit(state, self.ckpt_dir / "last.ckpt")
        self.fabric.barrier()

    def _save_best(self, method: Any, epoch: int, value: float) -> Dict[str, torch.Tensor]:
        # rank 0: the writer's snapshot is the kept copy (the weights are copied once, not twice)
        model_state, meta = self._export(method, copy=not self.is_zero)
        if self.is_zero:
            model_state = self._writer.submit(
                {"format": CKPT_FORMAT, "epoch": epoch, "value": value, "key": method.selection_key,
                 "model": model_state, "model_meta": meta},
                self.ckpt_dir / "best.ckpt",
            )["model"]
        return model_state

    def load_resume_state(self, config_yaml: str) -> Dict[str, Any]:
        """Read ``last.ckpt`` for ``--resume`` and check this run's config against the checkpoint's.

        Raises:
            FileNotFoundError: there is no ``last.ckpt`` to resume from.
            ValueError: not a kdlab run checkpoint; a changed config key that may not change on resume
                (:func:`kdlab.engine.rundir.resume_changes` names it).
        """
        path = self.ckpt_dir / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(f"--resume: {str(path)!r} does not exist; start the run without --resume")
        state = load_checkpoint(path)
        if state.get("format") != CKPT_FORMAT:
            raise ValueError(f"{str(path)!r} is not a kdlab run checkpoint (format {state.get('format')!r})")
        resume_changes(state["config"], config_yaml, path, int(state["epoch"]))
        return state

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, method: Any, train_set: Any, val_set: Any = None, resume: bool = False,
            resume_state: Optional[Dict[str, Any]] = None, callbacks: Sequence[Any] = ()) -> FitResult:
        """Train ``method`` on the transfer source ``train_set`` (any map-style dataset yielding
        :class:`kdlab.data.Batch` es: the labelled training subset, unlabelled out-of-domain images, or
        a data-free :class:`kdlab.data.NoData`); select the best epoch on ``val_set`` (if any).

        With ``resume``, training continues from ``last.ckpt`` (``resume_state``: that checkpoint,
        already loaded and checked by :func:`kdlab.engine.rundir.check_run_dir`). Changed keys that are
        safe on resume take effect (a new ``optim.lr`` or ``trainer.epochs`` resets each schedule to the
        one the new config gives at this epoch) and are logged as an ``{"event": "resume", "changed":
        ...}`` row of ``metrics.jsonl``.

        ``callbacks``: :class:`kdlab.engine.callbacks.Callback` s, given a read-only
        :class:`~kdlab.engine.callbacks.PlayersView` of ``method``: ``on_fit_start`` and ``on_step_end`` on
        every rank, ``on_epoch_end`` (after the epoch's ``last.ckpt``) and ``on_fit_end`` on rank 0 only.

        Raises:
            NonFiniteLossError: a loss became NaN/inf (``last.ckpt`` holds the last good epoch).
            kdlab.engine.callbacks.CallbackError: a callback raised (names it; ``last.ckpt`` holds the last
                completed epoch).
        """
        from kdlab.config import to_yaml

        cfg, tcfg, fabric = self.cfg, self.tcfg, self.fabric
        config_yaml = self.config_yaml if self.config_yaml is not None else to_yaml(cfg)
        if self.is_zero:  # only rank 0 writes the run directory
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        method.setup(fabric)
        method.on_fit_start(train_set, self.run_dir, self._batch_sizes(train_set))

        start_epoch, step, before_s = 0, 0, 0.0
        best: Dict[str, Any] = {"epoch": None, "value": None}
        best_state = None
        if resume:
            state = resume_state if resume_state is not None else self.load_resume_state(config_yaml)
            changes = resume_changes(state["config"], config_yaml, self.ckpt_dir / "last.ckpt", int(state["epoch"]))
            fresh = schedules(method)  # the schedules this config builds, before the checkpoint replaces them
            try:
                method.load_state_dict(state["method"])
            except (KeyError, RuntimeError, ValueError, TypeError) as exc:  # e.g. an edited file without a hash
                raise WeightsError(f"checkpoint {str(self.ckpt_dir / 'last.ckpt')!r} does not fit this run's players "
                                   f"and optimizers: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
            start_epoch, step, best = state["epoch"], state["global_step"], state["best"]
            before_s = float(state.get("train_time_s", 0.0))  # absent from checkpoints of kdlab before it counted
            if "optim.lr" in changes or "trainer.epochs" in changes:
                apply_schedules(method, fresh)
            set_rng_state(state["rng"])
            ranks = state.get("rng_ranks")
            if ranks is not None and ranks.shape[0] == fabric.world_size:
                set_rng_bytes(ranks[fabric.global_rank])
            if best["epoch"] is not None and (self.ckpt_dir / "best.ckpt").is_file():
                best_state = load_checkpoint(self.ckpt_dir / "best.ckpt")["model"]
            self.log.truncate_after(start_epoch)
            if changes:
                self.log.log(step, start_epoch, {"event": "resume", "changed": changes})
        else:
            if self.is_zero:
                (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)

        val_loader = None
        if val_set is not None and len(val_set) > 0:
            val_loader = make_loader(val_set, cfg.data.eval_batch_size, shuffle=False, seed=cfg.seed)
        # On one CPU process a per-step check is free. Under DDP a NaN on one rank must stop every rank at
        # the same step (a rank that stops alone leaves the others hanging in the next gradient
        # all-reduce), so the flag is gathered with the logged values at log steps, as on GPUs; the
        # last step of an epoch is a log step, so no NaN state reaches last.ckpt either way.
        check_every_step = fabric.device.type == "cpu" and fabric.world_size == 1
        # per-step settings as plain values: an OmegaConf read costs microseconds
        channels_last, log_every = bool(tcfg.channels_last), int(tcfg.log_every_n_steps)
        epochs = tcfg.epochs
        t_start = time.perf_counter()
        last_values: Dict[str, float] = {}
        key, maximize = method.selection_key, method.selection_mode == "max"
        val = None
        view = PlayersView(method, cfg, self.run_dir, rank=fabric.global_rank, world_size=fabric.world_size) \
            if callbacks else None  # the view copies the config (~10 ms): only when someone looks
        hooks = CallbackList(callbacks, view, fabric, self.ckpt_dir / "last.ckpt")
        hooks.at(start_epoch, step)
        hooks.fit_start()
        with CheckpointWriter() as self._writer, ProgressBar(enabled=tcfg.progress and self.is_zero) as bar, \
                StepBoundaryInterrupt(enabled=fabric.world_size == 1) as interrupt:
            for epoch in range(start_epoch, epochs):
                loader = self._train_loader(train_set, epoch)
                total = len(loader) if tcfg.limit_train_batches is None else min(len(loader), tcfg.limit_train_batches)
                bar.start_epoch(epoch, epochs, total)
                method.train()
                window_t, window_n = time.perf_counter(), 0
                bad = None
                for i, batch in enumerate(loader):
                    if i >= total:
                        break
                    batch = batch.to(fabric.device, non_blocking=True)
                    if channels_last:
                        batch = channels_last_batch(batch)
                    try:
                        out = method.step(batch, step)
                    except NonFiniteLossError as exc:  # raised inside the step (e.g. a term's bound)
                        self._stop({}, epoch, step + 1, reason=str(exc))
                    loss = out["loss"]
                    window_n += len(batch)
                    step += 1
                    if check_every_step:
                        if not math.isfinite(float(loss)):
                            self._stop(out, epoch, step)
                    else:
                        flag = ~torch.isfinite(loss.detach())
                        bad = flag if bad is None else (bad | flag)
                    bar.advance()
                    if step % log_every == 0 or i == total - 1:
                        logged, any_bad = self._across_ranks(out, bad)
                        if any_bad:
                            self._stop(logged, epoch, step)
                        bad = None
                        now = time.perf_counter()
                        values = {f"train/{k}": v for k, v in logged.items()}
                        values.update({f"lr/{k}": v for k, v in method.learning_rates().items()})
                        values["throughput"] = window_n * fabric.world_size / max(now - window_t, 1e-9)
                        window_t, window_n = now, 0
                        self.log.log(step, epoch, values)
                        bar.set_info({k: v for k, v in values.items() if k.startswith("train/") or k == "throughput"})
                        last_values = values
                    if hooks:
                        hooks.at(epoch, step)
                        hooks.step_end(batch, step, out)
                    if interrupt.requested:
                        self._writer.wait()
                        last = self.ckpt_dir / "last.ckpt"
                        raise TrainingInterrupted(epoch, step, last if last.exists() else None, interrupt.signal_name)
                method.on_epoch_end(epoch)
                if val_loader is not None:
                    metrics = method.validate(val_loader, fabric.device)
                    val = float(metrics[key])
                    self.log.log(step, epoch, metrics)
                    improved = method.selectable(epoch) and (
                        best["value"] is None or (val > best["value"] if maximize else val < best["value"]))
                    if improved:
                        best = {"epoch": epoch, "value": val}
                        best_state = self._save_best(method, epoch, val)
                self._save_last(method, epoch + 1, step, best, config_yaml, before_s + time.perf_counter() - t_start)
                if self.is_zero:
                    bar.print(
                        f"epoch {epoch + 1}/{epochs}  "
                        + format_values(last_values, [k for k in last_values if k.startswith("train/")])
                        + (f"  {key}={val:.4g}" if val is not None else "")
                    )
                if hooks:
                    self._writer.wait()  # a callback may read last.ckpt
                    hooks.at(epoch + 1, step)
                    hooks.epoch_end(epoch, {**last_values, **(metrics if val_loader is not None else {})})
        hooks.at(epochs, step)
        hooks.fit_end()
        if val_loader is None or best["epoch"] is None:  # no validation split (or no selectable epoch): the last
            best_state, _ = self._export(method)
            best = {"epoch": epochs - 1, "value": val}
        return FitResult(
            epochs_run=epochs - start_epoch,
            best_epoch=best["epoch"],
            val_best=best["value"],
            val_last=val,
            selection_key=key,
            final_losses={k.split("/", 1)[1]: v for k, v in last_values.items() if k.startswith("train/")},
            wall_time_s=before_s + time.perf_counter() - t_start,
            resumed_from_epoch=start_epoch,
            earlier_time_s=before_s,
            best_state=best_state,
        )

    def _across_ranks(self, out: Dict[str, Any], bad: Any) -> tuple:
        """(the step's losses as floats, whether any rank saw a non-finite loss since the last check).

        Under DDP the losses are averaged over the ranks, so the logged curve is that of the global batch
        (what one process with the same global batch would log), and the NaN flag is summed, so every
        rank takes the same decision; both travel in one all-reduce, once per log step.
        """
        keys = list(out)
        if self.fabric.world_size == 1:
            return {k: float(out[k]) for k in keys}, bad is not None and bool(bad)
        device = self.fabric.device
        vec = torch.stack([torch.as_tensor(out[k], dtype=torch.float32, device=device).detach().reshape(())
                           for k in keys]
                          + [torch.as_tensor(0.0 if bad is None else float(bool(bad)), device=device)])
        vec = self.fabric.all_reduce(vec, reduce_op="sum") / self.fabric.world_size
        return {k: float(v) for k, v in zip(keys, vec[:-1].tolist())}, bool(vec[-1] > 0)

    def _batch_sizes(self, train_set: Any) -> list:
        """Every batch size this rank's training loader yields: the batch size and the last, partial one."""
        n, b = len(self._train_loader(train_set, 0).sampler), int(self.cfg.data.batch_size)
        return sorted({min(b, n)} | ({n % b} if n > b and n % b else set())) if n else []

    def _train_loader(self, train_set: Any, epoch: int):
        return train_loader(self.cfg, self.fabric, train_set, epoch)

    def _stop(self, out: Dict[str, torch.Tensor], epoch: int, step: int, reason: Optional[str] = None) -> None:
        vals = reason or ", ".join(f"{k}={float(v):.4g}" for k, v in out.items())
        self._writer.wait()
        last = self.ckpt_dir / "last.ckpt"
        kept = (
            f"the last good checkpoint is {str(last)!r} (resume with --resume after lowering the learning rate, "
            f"e.g. --resume optim.lr={float(self.cfg.optim.lr) / 10:g})"
            if last.is_file()
            else "no epoch had completed, so there is no checkpoint"
        )
        what = "training stopped" if reason else "non-finite loss"
        raise NonFiniteLossError(f"{what} at epoch {epoch + 1}, step {step} ({vals}); the run stopped; {kept}") from None


def copy_with_state(model: nn.Module, state: Dict[str, torch.Tensor]) -> nn.Module:
    """A deep copy of ``model`` holding ``state`` (e.g. the best-on-validation weights)."""
    clone = copy.deepcopy(model)
    clone.load_state_dict(state)
    return clone


_WRAPPERS: tuple = ()


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under Fabric's and DDP's wrappers."""
    global _WRAPPERS
    if not _WRAPPERS:  # imported once: methods unwrap their players in every step
        from lightning_fabric.wrappers import _FabricModule
        from torch.nn.parallel import DistributedDataParallel

        _WRAPPERS = (_FabricModule, DistributedDataParallel)
    while isinstance(module, _WRAPPERS):
        module = module.module
    return module
