"""The base of methods whose student is a classifier distilled from a frozen teacher (``distill``,
``jacobian``, ``lwf``): the teacher, the student, the objective of ``objective.student`` and the step.

Not a method itself (no registration). One step on a batch:

``x <- x + input_noise * N(0, I)`` (optional explicit noise), then one forward of the teacher (only
when a term needs it, on ``batch.teacher_input``) and one of the student, each exposing the
features the terms asked for, then ``loss = sum_i weight_i * term_i`` and one optimizer step.

The teacher is frozen, so on a static transfer set its outputs (and what the terms derive from it,
e.g. input Jacobians) are read from a cache filled in one teacher pass, during the first epoch when it
is kept in memory (``trainer.teacher_cache``, :mod:`kdlab.games.teacher_cache`): no teacher passes
after it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from kdlab.config import ConfigError, bounded
from kdlab.data.batch import Batch
from kdlab.engine import file_sha256, load_network, network_identity, train_loader
from kdlab.engine.speed import channels_last_batch
from kdlab.games.base import Method, unwrap
from kdlab.games.networks import build_network
from kdlab.games.teacher_cache import build_teacher_cache, cache_blockers
from kdlab.ranks import rank_rows
from kdlab.terms import Outputs


@dataclass
class ClassifierStudentConfig:
    """``players`` section: explicit input noise for the student."""

    input_noise: float = bounded(0.0, ge=0)  # sigma of explicit Gaussian input noise (0 = off)


class ClassifierStudentMethod(Method):
    """Frozen teacher -> classifier student trained on the sum of the configured terms.

    Subclasses may override :meth:`build_teacher` and :meth:`build_student` (LwF: another label space,
    a two-headed student).

    Raises (at construction, before training):
        ConfigError: no terms with a weight > 0, a term the method cannot feed (see
            :func:`kdlab.terms.build_objective`), ``trainer.teacher_cache=on`` where the teacher's
            outputs change between epochs (names why).
        TeacherMismatchError: the teacher does not fit the evaluation data set.
    """

    export_name = "student"
    Config = ClassifierStudentConfig
    default_objective = {"student": {"ce": {"weight": 1.0}}}
    teacher_cache_unsupported = None
    synth_unsupported = None

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        teacher, self.teacher_path = self.build_teacher(cfg, spec)
        student = self.build_student(cfg, spec, teacher)
        objective = self.add_student("student", student, self.build_objective(self.term_context(student, teacher)))
        if not len(objective):
            raise ConfigError(f"objective.student has no term with a weight > 0 ({dict(cfg.objective.student)}); "
                              "set at least one, e.g. objective.student.kd.weight=1 (kdlab list terms)")
        self.objective = objective
        self.add_frozen("teacher", teacher)
        self.build_synthesizer(teacher, lambda: unwrap(self.players["student"]).net)
        self.input_noise = float(cfg.players.input_noise)  # read once: a config read costs microseconds per step
        self.teacher_cache = None
        self.cache_blockers = ([f"method {cfg.method!r} {self.teacher_cache_unsupported}"] if self.teacher_cache_unsupported
                               else cache_blockers(cfg, objective, transfer))
        if self.synthesizer is not None:
            self.cache_blockers.insert(0, "data.transfer=synth: the student's images are synthesised anew every step")
        if cfg.trainer.teacher_cache == "on" and self.cache_blockers:
            raise ConfigError("trainer.teacher_cache=on, but the teacher's outputs are not the same every epoch: "
                              + "; ".join(self.cache_blockers) + "; use trainer.teacher_cache=auto or off")

    def build_teacher(self, cfg: Any, spec: Any) -> Tuple[nn.Module, str]:
        """(teacher, weights path) from ``teacher.checkpoint``, checked against the evaluation data set."""
        return load_network(cfg.teacher.checkpoint, spec, hint="teacher.checkpoint=runs/<teacher run>")

    def build_student(self, cfg: Any, spec: Any, teacher: nn.Module) -> nn.Module:
        """The student network (``cfg.model``, optionally initialised from ``model.checkpoint``)."""
        return build_network(cfg, spec)

    def teacher_forward(self, x: torch.Tensor, batch: Batch) -> Optional[Outputs]:
        """The teacher's outputs on ``x`` (``batch.x_teacher`` when the teacher has its own view)."""
        return self.objective.teacher_outputs(self.frozen["teacher"], x if batch.x_teacher is None else batch.x_teacher,
                                              batch)

    def why_no_cache(self, batch_sizes: Optional[Sequence[int]] = None) -> Optional[str]:
        """Why this run keeps no teacher-output cache (``summary.json``'s ``teacher_cache.why_not``), or None when
        it keeps one; ``batch_sizes``: those the training loader yields (None: not known yet)."""
        tc = self.cfg.trainer
        if self.cache_blockers:
            return "; ".join(self.cache_blockers)
        if tc.teacher_cache == "off":
            return "trainer.teacher_cache=off"
        if not self.objective.needs_teacher:
            return "no term uses the teacher"
        # nothing would read a one-epoch run's cache: filling it would only cost (a fill epoch is ~3% slower than
        # an uncached one where the teacher is as cheap as the student: bench_distill_step.py --pair tiny)
        if tc.teacher_cache == "auto" and int(tc.epochs) == 1:
            return "trainer.epochs=1: no later epoch would read the teacher's outputs"
        return "no training batches" if batch_sizes is not None and not batch_sizes else None

    def on_fit_start(self, train_set: Any, run_dir: Any, batch_sizes: Sequence[int]) -> None:
        """Build the teacher-output cache (``trainer.teacher_cache`` auto/on on a static transfer set)."""
        tc = self.cfg.trainer
        self.teacher_cache = None
        if self.why_no_cache(batch_sizes):
            if tc.teacher_cache == "auto" and self.cache_blockers and self.objective.needs_teacher and tc.progress \
                    and self.fabric.is_global_zero:
                print("teacher cache off: " + "; ".join(self.cache_blockers))
            return
        from omegaconf import OmegaConf

        key = {"teacher_sha256": file_sha256(self.teacher_path), "terms": OmegaConf.to_container(self.cfg.objective.student),
               "teacher_features": self.objective.teacher_features, "device": self.fabric.device.type,
               "threads": torch.get_num_threads(), "torch": torch.__version__, "precision": tc.precision,
               "channels_last": tc.channels_last, "compile": tc.compile}

        def prepare(batch: Batch) -> Batch:
            batch = batch.to(self.fabric.device)
            return channels_last_batch(batch) if tc.channels_last else batch

        def build(during_training: bool, order: Any = None) -> Any:
            return build_teacher_cache(
                train_set, lambda b: self.teacher_forward(self.objective.prepare_input(b.x, b), b), batch_sizes, key,
                exact=tc.teacher_cache_exact, order=order, during_training=during_training, prepare=prepare,
                probe_rows=1 if tc.compile == "none" else max(batch_sizes),
                shared_dir=Path(tc.teacher_cache_dir).expanduser() if tc.teacher_cache_dir else None,
                spill_dir=Path(run_dir) / "teacher_cache", memory_bytes=float(tc.teacher_cache_memory_mb) * 2**20,
                log=print if self.fabric.is_global_zero and tc.progress else (lambda msg: None))

        def first_epoch_order() -> list:
            sampler = train_loader(self.cfg, self.fabric, train_set, 0).sampler
            return [list(b) for b in torch.utils.data.BatchSampler(sampler, int(self.cfg.data.batch_size), False)]

        self.teacher_cache = build(during_training=True)
        self._prebuild = lambda: build(during_training=False, order=first_epoch_order())

    def prebuild_teacher_cache(self) -> None:
        """Fill a cache that epoch 1 would fill now, before training, in epoch 1's batches (the same
        table): a resumed run starts after epoch 1 (:meth:`load_state_dict`); benchmarks time cached
        steps. No-op without such a cache."""
        if self.teacher_cache is not None and self.teacher_cache.first_epoch:
            self.teacher_cache = self._prebuild()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.prebuild_teacher_cache()

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        if self.teacher_cache is not None:
            self.teacher_cache.end_epoch()

    def forward_losses(self, batch: Batch, cached: bool = False) -> Tuple[Dict[str, torch.Tensor], Outputs, Optional[Outputs]]:
        """(weighted terms incl. ``loss``, student outputs, teacher outputs) for one batch, no step.
        ``cached``: a training batch of the transfer set, whose teacher outputs the cache may give."""
        sigma = self.input_noise
        x = batch.x + sigma * rank_rows(lambda n: batch.x.new_empty((n, *batch.x.shape[1:])).normal_(), len(batch.x)) \
            if sigma > 0 else batch.x
        x = self.objective.prepare_input(x, batch)
        if cached and self.teacher_cache is not None and batch.index is not None:
            t = self.teacher_cache.outputs(batch.index, x, lambda: self.teacher_forward(x, batch))
        else:
            t = self.teacher_forward(x, batch)
        s = self.players["student"](x)
        return self.student_terms("student", s, t, batch), s, t

    def losses(self, batch: Batch) -> Dict[str, torch.Tensor]:
        """The weighted terms for one batch (each already multiplied by its weight) and their sum ``loss``."""
        return self.forward_losses(batch)[0]

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        terms, s, t = self.forward_losses(batch, cached=True)
        self.step_optimizer("student", terms["loss"])
        out = {k: v.detach() for k, v in terms.items()}
        if self.objective.has_updates:
            out.update(self.update_terms("student", s, t, batch))
        return out

    def eval_model(self) -> nn.Module:
        return unwrap(self.players["student"]).net

    def summary_extra(self) -> Dict[str, Any]:
        cache = (self.teacher_cache.describe() if self.teacher_cache is not None else
                 {"location": None, "why_not": self.why_no_cache() or "no training batches"})
        out = {"teacher": network_identity(self.frozen["teacher"], self.teacher_path), "teacher_cache": cache}
        if self.synthesizer is not None:
            out["synthesizer"] = self.synthesizer.describe()
        return out
