"""The teacher-output cache: a frozen teacher's outputs on a static transfer set, computed once.

A student distilled from a frozen teacher on a fixed transfer set (no random augmentation, no input
noise) asks the teacher the same questions every epoch. The cache answers them from a table: the
teacher's logits, the named features the terms read and what the terms derive from the teacher alone
(:meth:`kdlab.terms.base.Term.teacher_derived`, e.g. the input Jacobians of the selected outputs), one
row per transfer-set example, gathered by ``batch.index``.

One teacher pass (the default). A kernel's result for one row can depend on the batch size (how the
work is split over threads, remainder kernels) but not on which other rows share the batch. The table
is filled once, at the training batch size, the last partial batch included:

* in memory, during the first epoch (:meth:`TeacherCache.outputs`): each training batch whose rows are
  not all filled yet runs the teacher as an uncached step does and stores its rows, so the first epoch
  costs what an uncached one costs and trains the same student bit for bit; later epochs read the table.
  A resumed run refills the table in the first epoch's batches (:func:`build_teacher_cache` with
  ``order``), the same rows in the same batches, hence the same bits as the uninterrupted run's table;
* on disk, before the first epoch, in consecutive chunks of the batch size (independent of the seed, so
  one shared cache serves every seed).

Every row equals the teacher's eval output on it to float rounding; rows computed in a batch of another
size than the one that reads them (those of the last partial batch) may differ in the last bits.

Exact (``trainer.teacher_cache_exact``). One table per batch size the training loader yields (the batch
size and the last, partial batch), each computed in batches of exactly that size (the last chunk padded
by wrapping around), and a training batch reads the table of its own size: with the same seed on CPU the
cached run trains the same student, bit for bit, as the uncached one (``tests/test_teacher_cache.py``), at
the cost of one teacher pass per table.

Where. In memory on the training device when the tables fit ``trainer.teacher_cache_memory_mb``;
otherwise memory-mapped ``.npy`` files under ``<run>/teacher_cache/``; always on disk under
``trainer.teacher_cache_dir`` when that is set (shared between runs). A disk cache is one directory
per key, written under a temporary name and renamed when complete, so a reader never sees half a
cache. The key is the SHA-256 of: the teacher's weights, the transfer set's contents (inputs after
every transform, the teacher's view, labels and row order), what is stored (features, the terms'
derived quantities and their configs), the batch sizes, and what changes float results (device type,
thread count, torch version, precision, channels-last, compile mode). A changed teacher or subset is
a new key: the old cache is never read for it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from kdlab.data.batch import Batch
from kdlab.engine.digest import file_sha256
from kdlab.terms import Outputs

__all__ = ["cache_blockers", "content_sha256", "TeacherCache", "build_teacher_cache"]

_DISK_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}


def cache_blockers(cfg: Any, objective: Any, transfer: Any) -> List[str]:
    """Why a frozen teacher's outputs on this run's transfer set are not the same every epoch (empty
    list: they are, and the cache is safe).

    Args:
        cfg: the run config (``data.augment``, ``players.input_noise``).
        objective: the student's :class:`kdlab.terms.Objective` (terms that differentiate the teacher
            through the input without deriving what they need, :attr:`Objective.teacher_cache_blockers`).
        transfer: the transfer source's :class:`kdlab.data.TransferInfo` (None: unknown).
    """
    reasons = []
    if cfg.data.augment:
        reasons.append("data.augment=true draws new crops and flips every epoch")
    if float(getattr(cfg.players, "input_noise", 0.0) or 0.0) > 0:
        reasons.append(f"players.input_noise={cfg.players.input_noise} adds fresh noise to the input every step")
    if transfer is None:
        reasons.append("the method was built without its transfer source")
    elif not transfer.indexed:
        reasons.append("the transfer source's batches carry no row indices")
    return reasons + list(objective.teacher_cache_blockers)


def content_sha256(dataset: Any, chunk: int = 4096) -> str:
    """SHA-256 of a transfer set's contents in row order: every tensor of its batches (inputs after
    all transforms, the teacher's view, labels, indices), read ``chunk`` rows at a time through
    ``__getitems__``."""
    h = hashlib.sha256()
    n = len(dataset)
    h.update(str(n).encode())
    for start in range(0, n, chunk):
        batch = dataset.__getitems__(list(range(start, min(n, start + chunk))))
        for name in ("x", "y", "x_teacher", "index"):
            v = getattr(batch, name)
            h.update(name.encode() + (b"-" if v is None else str(tuple(v.shape)).encode() + str(v.dtype).encode()))
            if v is not None:
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _flatten(t: Outputs) -> Dict[str, torch.Tensor]:
    out = {"out": t.out}
    if t.label_logits is not None:
        out["label_logits"] = t.label_logits
    out.update({f"feature:{k}": v for k, v in t.features.items()})
    out.update({f"derived:{k}": v for k, v in t.derived.items()})
    return {k: v.detach() for k, v in out.items()}


def _padded_chunks(n: int, size: int) -> List[Tuple[np.ndarray, int]]:
    """(rows, fresh) in batches of exactly ``size``, the last one padded by wrapping around; ``rows[:fresh]``
    are the rows a chunk writes (the padding rows are written by their own chunk)."""
    return [(np.arange(start, start + size) % n, min(size, n - start)) for start in range(0, n, size)]


def _one_pass(n: int, size: int, order: Optional[Sequence[Sequence[int]]]) -> List[Tuple[np.ndarray, int]]:
    """(rows, fresh = len(rows)): the batches of ``order`` (e.g. the first epoch's), then the rows it
    leaves out (a DDP rank's shard leaves out the other ranks' rows) in consecutive chunks of ``size``
    rows, the last one partial."""
    batches = [np.asarray(rows, dtype=np.int64) for rows in (order or [])]
    seen = np.zeros(n, dtype=bool)
    for rows in batches:
        seen[rows] = True
    rest = np.flatnonzero(~seen)
    batches += [rest[start:start + size] for start in range(0, len(rest), size)]
    return [(rows, len(rows)) for rows in batches if len(rows)]


class TeacherCache:
    """Per-example teacher outputs: one table (one pass), or one per training batch size (exact).

    Args:
        tables: batch size -> {name: tensor [N, ...] (memory) or ``np.ndarray``/memmap [N, ...] (disk)};
            names are ``out``, ``label_logits``, ``feature:<name>``, ``derived:<term>/<key>``. Empty for a
            cache filled during training (:meth:`filling`).
        location: ``"memory"`` or the cache directory.
        info: what :meth:`describe` reports (key, build time, bytes ...).
    """

    def __init__(self, tables: Dict[int, Dict[str, Any]], location: str, info: Dict[str, Any]) -> None:
        self.tables = tables
        self.location = location
        self.info = info
        self.default_size = max(tables) if tables else 0
        self.filled: Optional[torch.Tensor] = None  # bool [N] while rows are missing; None when complete
        self.first_epoch = False

    @classmethod
    def filling(cls, rows: int, batch_size: int) -> "TeacherCache":
        """An empty in-memory cache of ``rows`` rows, filled by :meth:`outputs` from the training batches:
        every batch of the first epoch, later only batches with a missing row."""
        cache = cls({}, "memory", {"rows": rows, "batch_sizes": [batch_size], "built": "during epoch 1",
                                   "build_s": 0.0})
        cache.default_size, cache.first_epoch = batch_size, True
        cache.filled = torch.zeros(rows, dtype=torch.bool)
        return cache

    def lookup(self, index: torch.Tensor, x: torch.Tensor) -> Outputs:
        """The teacher's :class:`~kdlab.terms.Outputs` for the rows ``index`` int64 [B] (on any device),
        as if computed from ``x`` [B, ...] (kept as ``Outputs.x``): tensors [B, ...] on ``x``'s device."""
        table = self.tables.get(int(index.shape[0]), self.tables[self.default_size])
        got: Dict[str, torch.Tensor] = {}
        for name, arr in table.items():
            if isinstance(arr, torch.Tensor):
                got[name] = arr.index_select(0, index if index.device == arr.device else index.to(arr.device))
            else:  # a memory-mapped file: gather on the host, copy once
                got[name] = torch.from_numpy(np.ascontiguousarray(arr[index.cpu().numpy()])).to(x.device, non_blocking=True)
        return Outputs(out=got["out"], label_logits=got.get("label_logits"), x=x,
                       features={k[8:]: v for k, v in got.items() if k.startswith("feature:")},
                       derived={k[8:]: v for k, v in got.items() if k.startswith("derived:")})

    def outputs(self, index: torch.Tensor, x: torch.Tensor, compute: Callable[[], Outputs]) -> Outputs:
        """The teacher's outputs for the rows ``index`` [B]: read from the table, or, while the cache is
        filling and a row is missing (every batch of the first epoch), ``compute()`` (the uncached step's
        teacher pass), whose rows are stored. Raises what ``compute`` raises."""
        if self.filled is None or (not self.first_epoch and bool(self.filled[index.cpu()].all())):
            return self.lookup(index, x)
        t0 = time.perf_counter()
        t = compute()
        flat = _flatten(t)
        if not self.tables:  # zeroed, not empty: the pages are touched once here, not one by one in the steps
            self.tables = {self.default_size: {k: v.new_zeros((self.info["rows"],) + tuple(v.shape[1:]))
                                               for k, v in flat.items()}}
        table = self.tables[self.default_size]
        dest = index.to(flat["out"].device)
        for name, value in flat.items():
            table[name].index_copy_(0, dest, value)
        self.filled.index_fill_(0, index.cpu(), True)
        self.info["build_s"] += time.perf_counter() - t0  # the teacher passes the first epoch paid, with the copies
        return t

    def end_epoch(self) -> None:
        """After a training epoch: later epochs only compute batches with a missing row; none missing, the
        cache is complete (no more checks)."""
        if self.filled is not None:
            self.first_epoch = False
            if bool(self.filled.all()):
                self.filled = None
                table = self.tables[self.default_size]
                self.info.update(names=sorted(table), bytes=sum(v.numel() * v.element_size() for v in table.values()))

    def describe(self) -> Dict[str, Any]:
        """JSON-able facts for ``summary.json``: location, key, rows, bytes, tables, build or load time."""
        missing = {} if self.filled is None else {"rows_missing": int((~self.filled).sum())}
        return {"location": self.location, **self.info, **missing}


def _allocate(directory: Optional[Path], n: int, shapes: Dict[str, tuple], dtypes: Dict[str, torch.dtype],
              sizes: Sequence[int], device: torch.device) -> Dict[int, Dict[str, Any]]:
    if directory is None:
        return {b: {k: torch.empty((n,) + shapes[k], dtype=dtypes[k], device=device) for k in shapes} for b in sizes}
    return {b: {k: np.lib.format.open_memmap(directory / f"b{b}-{i}.npy", mode="w+", dtype=_DISK_DTYPES[dtypes[k]],
                                             shape=(n,) + shapes[k])
                for i, k in enumerate(shapes)} for b in sizes}


def _load_disk(directory: Path, meta: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
    return {int(b): {k: np.load(directory / f"b{b}-{i}.npy", mmap_mode="r") for i, k in enumerate(meta["names"])}
            for b in meta["batch_sizes"]}


def _checked_tables(directory: Path, meta: Dict[str, Any]) -> Tuple[Optional[str], Optional[Dict[int, Dict[str, Any]]]]:
    """``(None, tables)`` when every table file of a disk cache holds the bytes whose sha256 its ``meta.json``
    recorded and loads, else ``(what is wrong, None)``: a missing, truncated or edited table, or a cache
    without hashes."""
    recorded = meta.get("sha256")
    if not isinstance(recorded, dict) or not recorded:
        return "its meta.json records no content hash per table (an older cache)", None
    for name, digest in sorted(recorded.items()):
        path = directory / name
        if not path.is_file():
            return f"table {name} is missing", None
        if file_sha256(path) != digest:
            return f"table {name} does not hold the bytes it was written with (sha256 mismatch: truncated or edited)", None
    try:
        return None, _load_disk(directory, meta)
    except (ValueError, OSError) as exc:
        return f"a table does not load ({exc})", None


def _writable(directory: Path) -> Optional[str]:
    """None when ``directory`` can be created and written, else the reason."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def build_teacher_cache(
    dataset: Any,
    compute: Callable[[Batch], Optional[Outputs]],
    batch_sizes: Sequence[int],
    key: Dict[str, Any],
    *,
    exact: bool = False,
    order: Optional[Sequence[Sequence[int]]] = None,
    during_training: bool = False,
    probe_rows: int = 1,
    prepare: Callable[[Batch], Batch] = lambda b: b,
    shared_dir: Optional[Path] = None,
    spill_dir: Optional[Path] = None,
    memory_bytes: float = float(1 << 30),
    log: Callable[[str], None] = lambda msg: None,
) -> Optional[TeacherCache]:
    """Compute (or load) the :class:`TeacherCache` of ``dataset`` before training.

    Args:
        dataset: an indexed transfer set (``__getitems__(indices) -> Batch`` with ``index``).
        compute: the method's own teacher pass on a prepared batch (the code the uncached step runs),
            returning :class:`~kdlab.terms.Outputs` or None when no term needs the teacher.
        batch_sizes: every batch size the training loader yields, the training batch size the largest.
        key: what identifies the cache besides the contents (teacher hash, stored names, batch sizes,
            numerics; :func:`content_sha256` of ``dataset`` is added for a disk cache).
        exact: one table per batch size, each computed in batches of that size (bit-identical to an
            uncached run; one teacher pass per size); else one table in one pass at the largest size.
        order: one pass only: the row indices of each batch, covering every row once (e.g. the first
            epoch's batches, to reproduce a table filled during it); None: consecutive chunks. Not used
            for a disk cache (shared between seeds).
        during_training: one pass in memory (no ``shared_dir``, ``n`` rows within ``memory_bytes``): return
            an empty :meth:`TeacherCache.filling` cache that the first epoch fills (a one-row teacher pass
            here sizes it) instead of building it now.
        probe_rows: the rows of that sizing pass (a compiled teacher: the batch size, so no shape of its
            own is compiled).
        prepare: moves a host batch to the training device / memory format, as the loop does.
        shared_dir: a shared cache directory (``trainer.teacher_cache_dir``): always on disk there.
        spill_dir: where a cache larger than ``memory_bytes`` goes when there is no ``shared_dir``.
        memory_bytes: the largest in-memory cache (all tables together), bytes.
        log: one-line progress messages.

    Returns:
        The cache, or None when ``compute`` gives None (no term uses the teacher).

    Raises:
        ValueError: ``batch_sizes`` empty or not positive, an empty data set.
    """
    sizes = sorted({int(b) for b in batch_sizes}, reverse=True)
    n = len(dataset)
    if not sizes or sizes[-1] < 1 or n < 1:
        raise ValueError(f"a teacher cache needs batch sizes >= 1 and rows; got sizes {list(batch_sizes)}, {n} rows")
    if not exact:
        sizes = sizes[:1]
    t0 = time.perf_counter()
    if during_training and not exact and shared_dir is None:
        probe = compute(prepare(dataset.__getitems__(list(range(min(n, probe_rows))))))
        if probe is None:
            return None
        if n * sum(v[:1].numel() * v.element_size() for v in _flatten(probe).values()) <= memory_bytes:
            log(f"teacher cache: {n} rows in memory, filled during epoch 1")
            return TeacherCache.filling(n, sizes[0])
    plan = {b: _padded_chunks(n, b) for b in sizes} if exact else {sizes[0]: _one_pass(n, sizes[0], order)}
    first = compute(prepare(dataset.__getitems__(plan[sizes[0]][0][0].tolist())))
    if first is None:
        return None
    sample = _flatten(first)
    shapes = {k: tuple(v.shape[1:]) for k, v in sample.items()}
    dtypes = {k: v.dtype for k, v in sample.items()}
    device = first.out.device
    row_bytes = sum(int(np.prod(s, dtype=np.int64)) * torch.empty((), dtype=dtypes[k]).element_size() for k, s in shapes.items())
    total = row_bytes * n * len(sizes)
    info = {"rows": n, "batch_sizes": sizes, "bytes": total, "names": sorted(shapes), "built": "before epoch 1"}

    directory = shared_dir if shared_dir is not None else (spill_dir if total > memory_bytes else None)
    if directory is not None and any(d not in _DISK_DTYPES for d in dtypes.values()):
        directory = None  # e.g. bfloat16 has no numpy type: keep it in memory
    if directory is not None:
        why = _writable(Path(directory))
        if why is not None:
            warnings.warn(f"teacher cache directory {str(directory)!r} is not writable ({why}); keeping the "
                          f"{total / 2**20:.1f} MiB cache in memory instead", stacklevel=2)
            info["fallback"] = f"{str(directory)!r} not writable: in memory"
            directory = None
    work = None
    if directory is not None:  # keyed by contents (hashing them costs a pass over the data: disk only)
        if not exact and order is not None:
            plan = {sizes[0]: _one_pass(n, sizes[0], None)}
            sample = _flatten(compute(prepare(dataset.__getitems__(plan[sizes[0]][0][0].tolist()))))
        full_key = dict(key, contents=content_sha256(dataset), names=sorted(shapes), batch_sizes=sizes)
        digest = hashlib.sha256(json.dumps(full_key, sort_keys=True, default=str).encode()).hexdigest()
        info["key"] = digest[:16]
        final = Path(directory) / digest[:16]
        meta_file = final / "meta.json"
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            if meta.get("key") == digest:
                problem, tables = _checked_tables(final, meta)
                if problem is None:
                    log(f"teacher cache: reusing {final}")
                    return TeacherCache(tables, str(final), dict(info, reused=True, load_s=time.perf_counter() - t0))
                warnings.warn(f"teacher cache {final}: {problem}; rebuilding it", stacklevel=2)
                log(f"teacher cache: {final}: {problem}; rebuilding it")
                shutil.rmtree(final, ignore_errors=True)
        work = Path(directory) / f"{digest[:16]}.tmp-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)

    names = list(shapes)
    tables = _allocate(work, n, shapes, dtypes, sizes, device)
    for b in sizes:
        for i, (rows, fresh) in enumerate(plan[b]):
            got = sample if (b == sizes[0] and i == 0) else _flatten(compute(prepare(dataset.__getitems__(rows.tolist()))))
            if work is None:
                dest = torch.from_numpy(rows[:fresh]).to(device)
                for name in names:
                    tables[b][name].index_copy_(0, dest, got[name][:fresh])
            else:
                for name in names:
                    tables[b][name][rows[:fresh]] = got[name][:fresh].cpu().numpy()
    info["build_s"] = time.perf_counter() - t0
    if work is None:
        log(f"teacher cache: {n} rows x {len(sizes)} batch size(s), {total / 2**20:.1f} MiB in memory, "
            f"built in {info['build_s']:.2f} s")
        return TeacherCache(tables, "memory", info)
    for b in sizes:
        for arr in tables[b].values():
            arr.flush()
    hashes = {f"b{b}-{i}.npy": file_sha256(work / f"b{b}-{i}.npy") for b in sizes for i in range(len(names))}
    (work / "meta.json").write_text(json.dumps({"key": digest, "names": names, "batch_sizes": sizes,
                                                "sha256": hashes, "full_key": full_key}, indent=1, default=str))
    try:
        os.rename(work, final)
    except OSError:  # another process finished the same cache first: use theirs
        shutil.rmtree(work, ignore_errors=True)
    meta = json.loads((final / "meta.json").read_text())
    log(f"teacher cache: {n} rows, {total / 2**20:.1f} MiB on disk in {final}, built in {info['build_s']:.2f} s")
    return TeacherCache(_load_disk(final, meta), str(final), info)
