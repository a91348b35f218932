"""Checkpoints written on a background thread, so that the next epoch's steps overlap the hashing,
serialising and fsync of the previous epoch's ``last.ckpt`` / ``best.ckpt``.

The state is snapshotted on the calling thread (every tensor copied to the CPU, shared storages kept
shared) before :meth:`CheckpointWriter.submit` returns, so training may change the live weights at once.
Files are written in submission order by one worker, each with
:func:`kdlab.engine.checkpoint.save_checkpoint` (hash, temp file, fsync, rename): a crash mid-write
leaves the previous file. :meth:`CheckpointWriter.wait` blocks until every submitted file is on disk
and re-raises the first write error (e.g. a full disk, whose message names the file); the trainer
waits before anything reads the run directory (callbacks, interrupt and NaN messages) and when a fit
ends, however it ends.
"""
from __future__ import annotations

import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from kdlab.engine.checkpoint import save_checkpoint


def snapshot(obj: Any, memo: Optional[Dict[tuple, torch.Tensor]] = None) -> Any:
    """A copy of ``obj`` (nested dicts / lists / tuples of tensors and plain values) whose tensors are
    detached CPU copies; two tensors that view the same memory the same way are copied once and stay
    one tensor (so ``torch.save`` still writes a weight that the model and the method both hold once)."""
    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype, t.device)
        if key not in memo:
            memo[key] = t.to("cpu", copy=True)
        return memo[key]
    if isinstance(obj, dict):
        return {k: snapshot(v, memo) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v, memo) for v in obj)
    return obj


class CheckpointWriter:
    """One background thread writing checkpoint files in order (see the module docstring).

    Use as a context manager: leaving the block waits for every file, re-raising a write error unless
    the block is already leaving with an exception (that one is raised; the write error is a warning).
    """

    def __init__(self) -> None:
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pending: List[Tuple[Path, Future]] = []

    def submit(self, state: Dict[str, Any], path: Path) -> Dict[str, Any]:
        """Snapshot ``state`` now and write it to ``path`` in the background, after the previous write to
        ``path`` has ended (one pending snapshot per file); raises that write's error, if it failed, instead
        of going on (so the run stops at the next epoch end, with the file as it was before). Returns the
        snapshot (CPU copies; the writer only reads them), for a caller that keeps the state too."""
        path = Path(path)
        self._wait_for([(p, f) for p, f in self._pending if p == path])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdlab-checkpoint")
        copied = snapshot(state)
        self._pending.append((path, self._pool.submit(save_checkpoint, copied, path)))
        return copied

    def wait(self) -> None:
        """Block until every submitted file is written; raises the first write's error (``OSError``...)."""
        self._wait_for(list(self._pending))

    def _wait_for(self, jobs: List[Tuple[Path, Future]]) -> None:
        error = None
        for job in jobs:
            self._pending.remove(job)
            exc = job[1].exception()
            if exc is not None and error is None:
                error = exc
        if error is not None:
            raise error

    def close(self) -> None:
        """:meth:`wait`, then stop the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except Exception as err:  # the exception already leaving the block is the one raised
                warnings.warn(f"a checkpoint could not be written: {err}", RuntimeWarning, stacklevel=2)
