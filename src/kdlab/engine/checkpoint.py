"""Atomic checkpoint files and safe loading.

Every file a run writes goes through :func:`atomic_write` (temp file in the same directory, fsync,
``os.replace``), so an interrupted write never leaves a truncated checkpoint behind.
Checkpoints are loaded with ``torch.load(..., weights_only=True)``; classifier weights are
exported as safetensors with enough metadata to rebuild the model by name.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import torch
from torch import nn

PathLike = Union[str, os.PathLike]
SAFETENSORS_FORMAT = "kdlab-classifier-1"


def atomic_write(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """:func:`atomic_write` for text (UTF-8)."""
    return atomic_write(path, text.encode("utf-8"))


def save_checkpoint(state: Dict[str, Any], path: PathLike) -> Path:
    """``torch.save`` ``state`` atomically. ``state`` must hold only tensors and plain Python data."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write(path, buf.getvalue())


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: no arbitrary unpickling).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    return torch.load(path, map_location=map_location, weights_only=True)


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (identifies teachers and metric extractors in reports)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def classifier_metadata(model: nn.Module, **extra: Any) -> Dict[str, str]:
    """The safetensors metadata that lets :func:`load_classifier` rebuild ``model`` by name."""
    meta = {
        "format": SAFETENSORS_FORMAT,
        "arch": str(model.arch),
        "arch_kwargs": json.dumps(dict(model.arch_kwargs), sort_keys=True),
        "num_classes": str(model.num_classes),
        "in_channels": str(model.in_channels),
        "image_size": str(model.image_size),
    }
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def save_classifier(model: nn.Module, path: PathLike, **extra: Any) -> Path:
    """Export a registry classifier's weights (CPU, contiguous) as safetensors, atomically.

    ``extra`` key/values (e.g. ``data="fashion-mnist"``) are stored as string metadata.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, save(tensors, metadata=classifier_metadata(model, **extra)))


def read_safetensors_metadata(path: PathLike) -> Dict[str, str]:
    """The string metadata of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def resolve_run_file(path: PathLike, names: tuple, what: str, how: str) -> Path:
    """A run directory (the first of ``names`` it holds) or a file path -> the file to load.

    Raises:
        FileNotFoundError: nothing there; the message names the path, what was looked for and ``how``
            to make it.
    """
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"run directory {str(path)!r} holds no {' or '.join(names[:2])}; train it first ({how}) "
            f"or point to a {what}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    return path


def resolve_weights(path: PathLike) -> Path:
    """A run directory, ``.safetensors`` or ``.ckpt`` path -> the classifier weights file to load.

    A run directory resolves to its ``teacher.safetensors`` or ``student.safetensors``.

    Raises:
        FileNotFoundError: nothing loadable there (the message lists what was looked for).
    """
    return resolve_run_file(
        path,
        ("teacher.safetensors", "student.safetensors", "model.safetensors"),
        "weights file",
        "kdlab train-teacher / kdlab distill",
    )


def read_weights(path: Path) -> tuple:
    """(string metadata, CPU state_dict) of a kdlab ``.safetensors`` file or run checkpoint
    (``best.ckpt``/``last.ckpt``: their ``model_meta``/``model`` entries; ``({}, None)`` if absent)."""
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import load_file

        return read_safetensors_metadata(path), load_file(str(path), device="cpu")
    ckpt = load_checkpoint(path)
    return ckpt.get("model_meta") or {}, ckpt.get("model")


def load_classifier(path: PathLike, map_location: Any = "cpu") -> nn.Module:
    """Rebuild a registry classifier from a kdlab ``.safetensors`` (or ``best.ckpt``) file.

    Args:
        path: run directory, ``*.safetensors`` written by :func:`save_classifier`, or a kdlab
            ``best.ckpt``/``last.ckpt`` (which carry the same metadata).

    Returns:
        The model in eval mode on ``map_location``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a kdlab classifier (no architecture metadata).
    """
    from kdlab.models import build_model

    path = resolve_weights(path)
    meta, state = read_weights(path)
    if state is None:
        raise ValueError(f"{str(path)!r} is a checkpoint without an exported model ('model_meta'/'model')")
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a kdlab classifier file (metadata format {meta.get('format')!r}, "
            f"expected {SAFETENSORS_FORMAT!r})"
        )
    model = build_model(
        meta["arch"],
        num_classes=int(meta["num_classes"]),
        in_channels=int(meta["in_channels"]),
        image_size=int(meta["image_size"]),
        **json.loads(meta["arch_kwargs"]),
    )
    model.load_state_dict(state)
    return model.to(map_location).eval()
