"""Choosing a subset of an unlabelled (out-of-domain) transfer set by the teacher's predictions.

Config ``data.transfer_select`` (with ``data.transfer_k``), usable by every method that trains on a
transfer set:

* ``entropy``: MosaicKD supplement Algorithm 1 (Fang et al. 2021): run the teacher over the set and
  keep the k images of highest prediction entropy ``H(p) = -sum_y p(y) ln p(y)`` (natural log), the
  ones the teacher finds least like any single class (:func:`entropy_topk`);
* ``balanced``: the "Balanced" baseline of MosaicKD Table 5 (Nayak et al. 2021): about k/K images per
  predicted class, the most confident of each class first (:func:`class_balanced`).

:func:`select_transfer` runs the teacher once (batched, no grad), caches the chosen row indices as a
small JSON file keyed by the teacher's weights hash, the transfer source and options, the rule and k,
and returns the subset. This module is below ``engine/`` and ``models/``: the teacher arrives as a
``predict`` callable.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from kdlab.data.memory import InMemoryDataset

#: accepted ``data.transfer_select`` values (``none`` keeps the whole transfer set)
SELECTION_RULES = ("none", "entropy", "balanced")


def _probs(probs: Any) -> np.ndarray:
    """``probs`` as float64 [N, K], checked to be rows of probabilities."""
    p = torch.as_tensor(probs).detach().cpu().double().numpy() if not isinstance(probs, np.ndarray) \
        else probs.astype(np.float64, copy=False)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 1:
        raise ValueError(f"probs must be teacher probabilities [N, K] with N, K >= 1, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probs must be finite and >= 0 (pass softmax(logits), not logits)")
    sums = p.sum(axis=1)
    if np.abs(sums - 1.0).max() > 1e-3:
        raise ValueError(f"probs rows must sum to 1 (softmax outputs); got row sums in [{sums.min():.4g}, "
                         f"{sums.max():.4g}]")
    return p


def _check_k(k: Any, n: int, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"{what} = {k!r} must be an int in 1..{n} (the transfer set has {n} images)")
    return int(k)


def entropy(probs: Any) -> np.ndarray:
    """Prediction entropy per row, natural log, ``0 ln 0 = 0``: float64 [N] in [0, ln K]."""
    p = _probs(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    return -plogp.sum(axis=1)


def entropy_topk(probs: Any, k: int) -> np.ndarray:
    """Algorithm 1 of the MosaicKD supplement: the k rows of highest prediction entropy.

    Args:
        probs: teacher probabilities [N, K] (rows sum to 1), numpy or torch.
        k: rows to keep, 1..N.

    Returns:
        int64 [k], sorted ascending: exactly the k highest-entropy rows; equal entropies are broken by
        the lower row index (a stable sort on -H).

    Raises:
        ValueError: probs not [N, K] probabilities; k outside 1..N.
    """
    h = entropy(probs)
    k = _check_k(k, h.shape[0])
    order = np.argsort(-h, kind="stable")  # stable: ties keep index order
    return np.sort(order[:k]).astype(np.int64)


def class_balanced(probs: Any, k: int) -> np.ndarray:
    """Class-balanced selection (MosaicKD Table 5 "Balanced", Nayak et al. 2021): about k/K rows per
    predicted class (argmax, ties to the lower class), each class's most confident rows first.

    The rule for uneven classes (water-filling, so exactly k rows whenever k <= N): every predicted class
    gets ``min(n_c, L)`` rows for the largest level L with ``sum_c min(n_c, L) <= k``; a class with fewer
    than L predicted rows gives all it has and its shortfall goes to the others. The r < (classes with
    n_c > L) rows still missing go one each to those classes in class-index order. Within a class, rows
    are ranked by the teacher's confidence ``max_y p(y)`` (descending, ties to the lower row index).
    Classes the teacher never predicts get nothing.

    Args:
        probs: teacher probabilities [N, K]. k: rows to keep, 1..N.

    Returns:
        int64 [k], sorted ascending.

    Raises:
        ValueError: probs not [N, K] probabilities; k outside 1..N.
    """
    p = _probs(probs)
    n, n_classes = p.shape
    k = _check_k(k, n)
    pred = p.argmax(axis=1)
    conf = p[np.arange(n), pred]
    counts = np.bincount(pred, minlength=n_classes)
    lo, hi = 0, int(counts.max())  # largest L with sum min(counts, L) <= k (monotone in L)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(counts, mid).sum() <= k else (lo, mid - 1)
    take = np.minimum(counts, lo)
    spare = k - int(take.sum())
    take[np.flatnonzero(counts > lo)[:spare]] += 1
    rows = np.arange(n)
    chosen = []
    for c in np.flatnonzero(take):
        members = rows[pred == c]
        ranked = members[np.lexsort((members, -conf[members]))]  # confidence desc, then index
        chosen.append(ranked[:take[c]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


_RULE_FUNCS = {"entropy": entropy_topk, "balanced": class_balanced}


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_indices`: rows chosen, of how many, and whether the cache gave them."""

    indices: np.ndarray
    n_source: int
    rule: str
    k: int
    cached: bool
    path: Path


def selection_cache_path(cache_dir: os.PathLike, key: Mapping[str, Any], rule: str, k: int) -> Path:
    """``<cache_dir>/<rule>-k<k>-<sha256 of the key, rule and k>[:16].json``."""
    blob = json.dumps({"key": dict(key), "rule": rule, "k": int(k)}, sort_keys=True, default=str)
    return Path(cache_dir) / f"{rule}-k{int(k)}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"


def _read_cache(path: Path, n: int, rule: str, k: int) -> Optional[np.ndarray]:
    """Indices of a cache file that fits (same rule, k and set size, in range); None otherwise."""
    try:
        doc = json.loads(path.read_text())
        idx = np.asarray(doc["indices"], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = doc.get("rule") == rule and doc.get("k") == k and doc.get("n_source") == n and idx.shape == (k,)
    return idx if ok and (idx.size == 0 or (idx.min() >= 0 and idx.max() < n)) else None


def _write_cache(path: Path, doc: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:  # temp file + rename: a reader never sees half a file
        json.dump(doc, fh)
    os.replace(tmp, path)


@torch.no_grad()
def teacher_probs(dataset: InMemoryDataset, predict: Callable[[torch.Tensor], Any], batch_size: int = 500) -> np.ndarray:
    """``predict`` over every row of ``dataset`` in order, without augmentation: float64 [N, K]."""
    view = InMemoryDataset(dataset.images, dataset.labels, dataset.mean, dataset.std, augment=False,
                           labelled=dataset.labelled)  # shares the images; never augmented
    out = []
    for start in range(0, len(view), batch_size):
        x = view.__getitems__(range(start, min(start + batch_size, len(view)))).x
        p = torch.as_tensor(predict(x)).detach().float().cpu()
        if p.ndim != 2 or p.shape[0] != x.shape[0]:
            raise ValueError(f"predict must return probabilities [B, K] for a batch of B = {x.shape[0]}, "
                             f"got shape {tuple(p.shape)}")
        out.append(p.double().numpy())
    return np.concatenate(out)


def select_indices(dataset: InMemoryDataset, predict: Callable[[torch.Tensor], Any], k: int, rule: str,
                   cache_dir: os.PathLike, key: Mapping[str, Any], batch_size: int = 500) -> Selection:
    """The rows :func:`select_transfer` keeps, from the cache when it holds them (``predict`` is then
    never called), else from one teacher pass (then cached). Errors as :func:`select_transfer`."""
    if rule not in _RULE_FUNCS:
        raise ValueError(f"data.transfer_select = {rule!r}; accepted: {', '.join(SELECTION_RULES)}")
    if not isinstance(dataset, InMemoryDataset):
        raise ValueError(f"data.transfer_select needs an in-memory image transfer set, got {type(dataset).__name__}")
    n = len(dataset)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"data.transfer_k = {k!r} is larger than the transfer set's {n} images (or not an int "
                         f">= 1); accepted: 1..{n}")
    path = selection_cache_path(cache_dir, key, rule, int(k))
    idx = _read_cache(path, n, rule, int(k)) if path.is_file() else None
    if idx is not None:
        return Selection(idx, n, rule, int(k), True, path)
    idx = _RULE_FUNCS[rule](teacher_probs(dataset, predict, batch_size), int(k))
    _write_cache(path, {"key": dict(key), "rule": rule, "k": int(k), "n_source": n, "indices": idx.tolist()})
    return Selection(idx, n, rule, int(k), False, path)


def select_transfer(dataset: InMemoryDataset, predict: Callable[[torch.Tensor], Any], k: int, rule: str,
                    cache_dir: os.PathLike, key: Mapping[str, Any], *, batch_size: int = 500,
                    log: Optional[Callable[[str], None]] = print) -> InMemoryDataset:
    """Keep k rows of an unlabelled transfer set chosen by the teacher (``data.transfer_select``).

    Args:
        dataset: the transfer set (:class:`InMemoryDataset`, normalised with the teacher domain's mean/std).
        predict: the teacher, ``x`` float32 [B, C, H, W] normalised -> probabilities [B, K] (softmax);
            called under ``torch.no_grad`` in batches of ``batch_size``, in row order, on un-augmented rows.
        k: rows to keep (``data.transfer_k``), 1..N. rule: ``'entropy'`` or ``'balanced'``.
        cache_dir: where selections are cached (the runner uses ``<out_dir>/.cache/selection/``).
        key: JSON-serialisable identity of the teacher and the transfer set (teacher weights sha256,
            source name and options); with ``rule`` and ``k`` it names the cache file.
        log: receives one line: how many images were kept and whether the cache gave them (None: silent).

    Returns:
        a new :class:`InMemoryDataset` of the kept rows in their source order (rows 0..k-1, so
        ``batch.index`` is in [0, k)), with the source's normalisation, augmentation and ``labelled``.

    Raises:
        ValueError: an unknown rule (lists the accepted); k not in 1..N (names k and the set size);
            a dataset that is not in memory; ``predict`` returning a wrong shape or non-probabilities.
    """
    sel = select_indices(dataset, predict, k, rule, cache_dir, key, batch_size)
    if log is not None:
        how = "from the cache" if sel.cached else "by one teacher pass, cached"
        log(f"transfer selection: kept {sel.k} of {sel.n_source} images by {rule} ({how}: {sel.path})")
    return dataset.subset(torch.from_numpy(sel.indices))


__all__ = ["SELECTION_RULES", "Selection", "class_balanced", "entropy", "entropy_topk", "select_indices",
           "select_transfer", "selection_cache_path", "teacher_probs"]
