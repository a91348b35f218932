"""Stratified, seed-reproducible subsets and train/validation splits (pure index arithmetic)."""
from __future__ import annotations

import numbers
from typing import Optional, Tuple, Union

import numpy as np
import torch


def _check_labels(labels: torch.Tensor) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D [N], got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    return labels.to(torch.int64).cpu()


def _check_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} must be an int, got {value!r}")
    return int(value)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(_check_int(seed, "seed"))


def stratified_subset(
    labels: torch.Tensor,
    n_per_class: int,
    seed: int,
    candidates: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Pick exactly ``n_per_class`` indices of every class, reproducibly from ``seed``.

    The candidates are put in one random order (a ``torch.Generator`` seeded with ``seed``) and,
    per class, the first ``n_per_class`` in that order are kept. So the subset is a pure function
    of ``(labels, candidates, n_per_class, seed)``, and subsets of one seed are nested: the
    ``n=10`` subset is contained in the ``n=20`` subset.

    Args:
        labels: int [N], class of each example of the full set.
        n_per_class: examples to keep per class, >= 0.
        seed: random seed.
        candidates: optional int [M] indices into ``labels`` to draw from (e.g. the training part
            of a train/validation split); default all N.

    Returns:
        int64 [K * n_per_class] indices into ``labels``, sorted ascending, where K is the number of
        distinct classes in ``labels`` (every class of the full set must be represented).

    Raises:
        ValueError: ``n_per_class`` < 0 or not an int; a class with fewer than ``n_per_class``
            candidates (the message names the class and its count); bad label/candidate tensors.
    """
    labels = _check_labels(labels)
    n = _check_int(n_per_class, "n_per_class")
    if n < 0:
        raise ValueError(f"n_per_class must be >= 0, got {n}")
    if candidates is None:
        cand = torch.arange(labels.numel())
    else:
        cand = torch.as_tensor(candidates).to(torch.int64).cpu().reshape(-1)
        if cand.numel() and (cand.min() < 0 or cand.max() >= labels.numel()):
            raise ValueError(f"candidates must index labels of length {labels.numel()}, got range "
                             f"[{int(cand.min())}, {int(cand.max())}]")
        if np.unique(cand.numpy()).size != cand.numel():
            raise ValueError("candidates contain duplicate indices")
    lab = labels.numpy()
    classes = np.unique(lab)
    if n == 0 or classes.size == 0:
        return torch.empty(0, dtype=torch.int64)
    # index arithmetic in numpy: torch.sort/unique are slow on small CPU machines under load
    perm = cand.numpy()[torch.randperm(cand.numel(), generator=_generator(seed)).numpy()]
    perm_labels = lab[perm]
    picked = []
    for c in classes.tolist():
        of_c = perm[perm_labels == c]
        if of_c.size < n:
            raise ValueError(
                f"class {c} has only {of_c.size} candidate examples, fewer than data.n_per_class={n}"
            )
        picked.append(of_c[:n])
    return torch.from_numpy(np.sort(np.concatenate(picked)))


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts`` (largest-remainder rounding; ties
    go to the lower class index), never more than a class holds."""
    n = int(counts.sum())
    exact = counts.astype(np.float64) * total / n
    alloc = np.floor(exact).astype(np.int64)
    rest = total - int(alloc.sum())
    if rest > 0:
        # stable sort on -remainder: equal remainders keep class order
        order = np.argsort(-(exact - alloc), kind="stable")
        alloc[order[:rest]] += 1
    return np.minimum(alloc, counts)


def train_val_split(
    labels: torch.Tensor, val_size: Union[int, float], seed: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stratified split of ``range(N)`` into disjoint training and validation indices.

    The validation count is spread over classes in proportion to their frequencies (largest-remainder
    rounding), and within each class a seeded random permutation picks which examples go to
    validation. Fashion-MNIST's 60,000 training images with ``val_size=5000`` give exactly 500 per class.

    Args:
        labels: int [N].
        val_size: an int = number of validation examples (0 <= val_size < N), or a float in (0, 1) =
            fraction of N (rounded to the nearest int). 0 gives an empty validation set.
        seed: random seed.

    Returns:
        ``(train_idx int64 [N - V], val_idx int64 [V])``, each sorted ascending, disjoint, covering 0..N-1.

    Raises:
        ValueError: ``val_size`` negative, >= N, a float outside (0, 1), or not a number.
    """
    labels = _check_labels(labels)
    n = labels.numel()
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Real):
        raise ValueError(f"val_size must be an int count or a float fraction in (0, 1), got {val_size!r}")
    if isinstance(val_size, numbers.Integral):
        v = int(val_size)
        if v < 0 or (v >= n and v > 0):
            raise ValueError(f"data.val_size={v} must be in [0, {n - 1}] for {n} examples")
    else:
        f = float(val_size)
        if f == 0.0:
            v = 0
        elif not 0.0 < f < 1.0:
            raise ValueError(f"val_size as a fraction must be in (0, 1), got {val_size!r}")
        else:
            v = int(round(f * n))
            if v >= n:
                v = n - 1
    g = _generator(seed)
    if v == 0:
        return torch.arange(n, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
    lab = labels.numpy()
    classes, counts = np.unique(lab, return_counts=True)
    alloc = _allocate(counts, v)
    val_parts = []
    for c, k in zip(classes.tolist(), alloc.tolist()):
        idx = np.flatnonzero(lab == c)
        val_parts.append(idx[torch.randperm(idx.size, generator=g).numpy()[:k]])
    val_idx = np.sort(np.concatenate(val_parts))
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    train_idx = np.flatnonzero(mask)
    return torch.from_numpy(train_idx.astype(np.int64)), torch.from_numpy(val_idx.astype(np.int64))
