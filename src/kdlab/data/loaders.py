"""DataLoaders whose shuffling order is a pure function of (seed, epoch)."""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from torch.utils.data import default_collate

from kdlab.data.batch import Batch, as_batch
from kdlab.data.memory import InMemoryDataset, collate_batched

#: Multiplier so that (seed, epoch) pairs map to distinct generator seeds for epochs < 1000003.
SEED_STRIDE = 1000003


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of one epoch: ``seed * 1000003 + epoch``."""
    return int(seed) * SEED_STRIDE + int(epoch)


class SeededSampler(Sampler[int]):
    """Indices 0..n-1 in an order that depends only on ``(seed, epoch)``.

    Each ``__iter__`` re-seeds a private ``torch.Generator`` with ``seed * 1000003 + epoch``, so
    iterating twice, or in a resumed run, gives the same order, and the global RNG is untouched.
    For data parallelism, ``num_replicas``/``rank`` take every ``num_replicas``-th index of that order
    starting at ``rank`` (the order is first padded by wrapping around, as ``DistributedSampler``
    does, unless ``drop_last``), so the ranks see disjoint shards of one permutation.

    Args:
        n: data set length.
        shuffle: False gives 0..n-1 in order.
        seed, epoch: ints; :meth:`set_epoch` changes the epoch.
        num_replicas, rank: data-parallel sharding (default: one process).
        drop_last: with sharding, drop the tail instead of padding.

    Raises:
        ValueError: n < 0, num_replicas < 1, rank outside [0, num_replicas).
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                 num_replicas: int = 1, rank: int = 0, drop_last: bool = False) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}")
        self.n, self.shuffle, self.seed, self.epoch = int(n), bool(shuffle), int(seed), int(epoch)
        self.num_replicas, self.rank, self.drop_last = int(num_replicas), int(rank), bool(drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from the next iteration on."""
        self.epoch = int(epoch)

    def order(self) -> torch.Tensor:
        """The full (unsharded) order, int64 [n]."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.n, generator=g)

    def _shard(self) -> torch.Tensor:
        idx = self.order()
        if self.num_replicas == 1:
            return idx
        if self.drop_last:
            total = (self.n // self.num_replicas) * self.num_replicas
            idx = idx[:total]
        else:
            total = math.ceil(self.n / self.num_replicas) * self.num_replicas
            if total > self.n and self.n > 0:
                reps = math.ceil(total / self.n)
                idx = idx.repeat(reps)[:total]
        return idx[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self._shard().tolist())

    def __len__(self) -> int:
        if self.num_replicas == 1:
            return self.n
        if self.drop_last:
            return self.n // self.num_replicas
        return math.ceil(self.n / self.num_replicas)


def _batched(dataset: Dataset) -> bool:
    """True for a dataset whose ``__getitems__`` returns a whole :class:`Batch` (an InMemoryDataset,
    a data-free :class:`~kdlab.data.transfer.NoData`), or Subset(s) of one."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return isinstance(dataset, InMemoryDataset) or getattr(dataset, "yields_batches", False)


def collate_to_batch(items: Any) -> Batch:
    """Default collate of per-sample tuples, then :func:`as_batch` (other map-style datasets)."""
    return as_batch(default_collate(items))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
    *,
    num_replicas: int = 1,
    rank: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose batch order is a pure function of ``(seed, epoch)``.

    The sampler is a :class:`SeededSampler` (a ``torch.Generator`` seeded with
    ``seed * 1000003 + epoch``), so a run resumed at epoch e sees exactly the order an uninterrupted
    run sees at epoch e; ``loader.sampler.set_epoch(e)`` reuses one loader across epochs. The
    loader's own generator (worker base seeds, hence the augmentation draws in workers) is seeded the
    same way. An :class:`InMemoryDataset` (or a ``Subset`` of one) is served batch-wise through its
    ``__getitems__`` with :func:`collate_batched`; other datasets use the default collate.

    Args:
        dataset: a map-style dataset.
        batch_size: >= 1.
        shuffle: random order (True) or 0..n-1 (False).
        seed, epoch: ints fixing the order.
        drop_last: drop the last incomplete batch.
        num_workers: DataLoader worker processes (0 = load in the main process, best for in-memory data).
        num_replicas, rank: data-parallel sharding of the order (see :class:`SeededSampler`); use with
            ``fabric.setup_dataloaders(..., use_distributed_sampler=False)``.
        pin_memory: pin batches for faster host-to-GPU copies.

    Returns:
        ``torch.utils.data.DataLoader`` yielding :class:`kdlab.data.Batch` es.

    Raises:
        ValueError: batch_size < 1 or num_workers < 0.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    sampler = SeededSampler(len(dataset), shuffle=shuffle, seed=seed, epoch=epoch,
                            num_replicas=num_replicas, rank=rank, drop_last=drop_last)
    loader_gen = torch.Generator().manual_seed(epoch_seed(seed, epoch) + 7919 * rank)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_batched if _batched(dataset) else collate_to_batch,
        generator=loader_gen,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def in_memory_rows(dataset: Dataset) -> Any:
    """``(base, rows)`` for an :class:`InMemoryDataset` or a chain of ``Subset`` s of one: the base set and
    the base rows of the dataset's positions 0..n-1 (int64 [n], None for the base itself); None for any
    other dataset."""
    rows = None
    chain = []
    while isinstance(dataset, Subset):
        chain.append(torch.as_tensor(dataset.indices, dtype=torch.int64))
        dataset = dataset.dataset
    if not isinstance(dataset, InMemoryDataset):
        return None
    for idx in reversed(chain):  # innermost first: compose the position -> row maps
        rows = idx if rows is None else rows[idx]
    return dataset, rows


class DeviceBatches:
    """The batches :func:`make_loader` yields (same sampler, same order, same values, same augmentation
    draws) for an in-memory set, cut straight from a copy of the set held on ``device``
    (:meth:`InMemoryDataset.batch_on`): no DataLoader, no worker, no per-batch host-to-device copy.

    Iterating yields :class:`Batch` es on ``device`` whose ``index`` is the base set's row, as the
    DataLoader over ``Subset`` s gives. ``len()`` is the number of batches; ``sampler`` is the
    :class:`SeededSampler` (``len(sampler)`` = samples of this rank).

    Raises:
        ValueError: ``dataset`` is not an in-memory set (see :func:`in_memory_rows`), or batch_size < 1.
    """

    def __init__(self, dataset: Dataset, batch_size: int, sampler: SeededSampler, device: Any) -> None:
        found = in_memory_rows(dataset)
        if found is None:
            raise ValueError(f"DeviceBatches needs an InMemoryDataset (or Subsets of one), got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.base, self.rows = found
        self.batch_size, self.sampler, self.device = batch_size, sampler, torch.device(device)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.sampler._shard()
        if self.rows is not None:
            order = self.rows[order]
        for start in range(0, order.numel(), self.batch_size):
            yield self.base.batch_on(self.device, order[start:start + self.batch_size])
