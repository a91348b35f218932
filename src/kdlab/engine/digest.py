"""Content hashes: :func:`state_digest` of what a checkpoint or weights file holds (the hash kdlab records in
every file it writes, :mod:`kdlab.engine.checkpoint`) and :func:`file_sha256` of a file's bytes (identities
of teachers and metric extractors in reports)."""
from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping, Union

import torch

PathLike = Union[str, os.PathLike]


def state_digest(obj: Any) -> str:
    """Hex SHA-256 of ``obj`` (nested dicts / lists / tuples of tensors and plain values): dict keys in
    sorted order (by ``repr``: keys may be ``str`` or ``int``), each tensor as dtype, shape and raw bytes,
    each other value as its type name and ``repr``. Equal for the object before saving and after loading."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, Mapping):
        h.update(b"{%d" % len(obj))
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode() + b":")
            _feed(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[%d" % len(obj))
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (identifies teachers and metric extractors in reports)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
