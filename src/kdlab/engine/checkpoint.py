"""Atomic checkpoint files and safe, verified loading.

Every file a run writes goes through :func:`atomic_write` (temp file in the same directory, fsync,
``os.replace``), so an interrupted write never leaves a truncated checkpoint behind.
Checkpoints are loaded with ``torch.load(..., weights_only=True)``; classifier weights are
exported as safetensors with enough metadata to rebuild the model by name.

Content hash. Every file written here records a SHA-256 of its content, checked on load:

* ``.ckpt`` (``last.ckpt``, ``best.ckpt``): the entry ``"sha256"`` of the saved dict;
* ``.safetensors``: the metadata key ``"sha256"``.

The hash is :func:`kdlab.engine.digest.state_digest` of what the file holds without the hash itself: a walk of the saved
object in sorted key order that feeds each tensor's dtype, shape and raw bytes (CPU, contiguous) and
each plain value's type and ``repr``; for safetensors, the object is ``{"metadata": <metadata without
sha256>, "tensors": <the tensors>}``. Hashing the content rather than the file bytes makes the hash
independent of the serialiser (zip layout, header padding) and lets it be computed before the file
exists. Files written before the hash existed load without a check and without a message.
Every problem with a file is a :class:`WeightsError` naming the file and what is wrong.
"""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping

import torch
from torch import nn

from kdlab.engine.digest import PathLike, state_digest

SAFETENSORS_FORMAT = "kdlab-classifier-1"
#: the checkpoint entry / safetensors metadata key holding the content hash (see the module docstring)
HASH_KEY = "sha256"
#: a safetensors header larger than this is taken for foreign bytes (real headers are kilobytes)
_MAX_HEADER = 100 << 20


class WeightsError(ValueError):
    """A weights or checkpoint file cannot be used: empty, truncated, not a kdlab file, another kind of
    network, a tensor of the wrong shape, non-finite weights or a content hash that does not match.
    The message names the file and what is wrong."""


def atomic_write(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename). Returns the path.

    Raises:
        OSError: the write failed (a full disk, no permission...); the message names ``path``, the bytes
            asked for and what to do; the previous file at ``path``, if any, is unchanged.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if not isinstance(exc, OSError):
            raise
        hint = "free some space" if exc.errno == errno.ENOSPC else "check the directory's permissions and space"
        raise OSError(exc.errno, f"could not write {str(path)!r} ({len(data):,} bytes): {exc.strerror or exc}; "
                      f"{hint}; the previous file, if any, is unchanged") from exc
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """:func:`atomic_write` for text (UTF-8)."""
    return atomic_write(path, text.encode("utf-8"))


def save_checkpoint(state: Dict[str, Any], path: PathLike) -> Path:
    """``torch.save`` ``state`` atomically, with its content hash as entry ``"sha256"`` (see the module
    docstring). ``state`` must hold only tensors and plain Python data."""
    body = {k: v for k, v in state.items() if k != HASH_KEY}
    buf = io.BytesIO()
    torch.save({**body, HASH_KEY: state_digest(body)}, buf)
    return atomic_write(path, buf.getvalue())


def load_checkpoint(path: PathLike, map_location: Any = "cpu", what: str = "checkpoint") -> Dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: nothing in the file is executed) and check its
    content hash when it has one (the ``"sha256"`` entry is removed from the returned dict).

    Args:
        what: how messages name the file (``"checkpoint"``, ``"--resume checkpoint"``...).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        WeightsError: the file is empty, truncated, a pickle or other file that is not a kdlab
            checkpoint, not a dict, or its content does not match its recorded hash.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    name = f"{what} {str(path)!r}"
    _check_not_empty(path, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notes on foreign files: the error below says it all
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{name} {_why_unloadable(path, exc)}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{name} is not a kdlab checkpoint: it holds a {type(state).__name__}, not a dict of "
                           f"weights and training state")
    if HASH_KEY in state:
        recorded = state.pop(HASH_KEY)
        _check_digest(name, recorded, state_digest(state))
    return state


def _check_not_empty(path: Path, name: str) -> None:
    if path.stat().st_size == 0:
        raise WeightsError(f"{name} is empty (0 bytes): not a kdlab weights file (an interrupted copy?)")


def _why_unloadable(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` failed, from the file's first bytes (the exception text alone rarely says)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"PK\x03\x04":
        if not zipfile.is_zipfile(path):
            return "is truncated or damaged: an incomplete torch.save archive (its zip directory is missing)"
        if isinstance(exc, pickle.UnpicklingError):
            return ("holds Python objects other than tensors and plain data: it is not a kdlab checkpoint "
                    "(kdlab loads weights only; nothing in the file was run)")
        return f"is damaged: {str(exc).splitlines()[0]}"
    if head[:1] == b"\x80":
        return ("is a Python pickle, not a kdlab checkpoint (a torch.save archive); kdlab loads weights only, "
                "nothing in the file was run")
    return f"is not a kdlab checkpoint: neither a torch.save archive nor a safetensors file (first bytes {head!r})"


def _check_digest(name: str, recorded: Any, actual: str) -> None:
    if recorded != actual:
        raise WeightsError(f"{name} fails its content check (hash mismatch: recorded sha256 {str(recorded)[:16]}..., "
                           f"content gives {actual[:16]}...): the file was edited or damaged after it was written")


def classifier_metadata(model: nn.Module, **extra: Any) -> Dict[str, str]:
    """The safetensors metadata that lets :func:`load_classifier` rebuild ``model`` by name."""
    meta = {"format": SAFETENSORS_FORMAT, "arch": str(model.arch),
            "arch_kwargs": json.dumps(dict(model.arch_kwargs), sort_keys=True)}
    meta.update({k: str(getattr(model, k)) for k in ("num_classes", "in_channels", "image_size")})
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def save_classifier(model: nn.Module, path: PathLike, **extra: Any) -> Path:
    """Export a registry classifier's weights (CPU, contiguous) as safetensors, atomically.

    ``extra`` key/values (e.g. ``data="fashion-mnist"``) are stored as string metadata.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, save_with_hash(tensors, classifier_metadata(model, **extra)))


def save_with_hash(tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> bytes:
    """safetensors bytes of ``tensors`` whose metadata holds ``metadata`` and the content hash ``sha256``."""
    from safetensors.torch import save

    meta = {k: v for k, v in metadata.items() if k != HASH_KEY}
    return _sorted_metadata(save(tensors, metadata={**meta, HASH_KEY: state_digest({"metadata": meta, "tensors": tensors})}))


def _sorted_metadata(data: bytes) -> bytes:
    """safetensors ``data`` with its ``__metadata__`` keys in sorted order, the header's length kept: safetensors
    writes them in a random order at every save (safetensors/safetensors#584), so the same weights gave files,
    and ``weights_sha256``, that differed between identical runs. The JSON is re-written as serde_json writes it
    (compact, UTF-8), so its length is unchanged; the spec's trailing spaces pad it otherwise."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps({"__metadata__": header.pop("__metadata__"), **header}, separators=(",", ":"), ensure_ascii=False)
    raw = text.encode()
    return data if len(raw) > n else data[:8] + raw.ljust(n, b" ") + data[8 + n:]


def safetensors_header(path: PathLike, what: str = "weights file") -> Dict[str, Any]:
    """The JSON header of a safetensors file (tensor entries and ``__metadata__``), checked against the
    file's length.

    Raises:
        WeightsError: empty, truncated, longer than its tensors, or not a safetensors file.
    """
    path = Path(path)
    name = f"{what} {str(path)!r}"
    _check_not_empty(path, name)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        if head[:4] == b"PK\x03\x04":
            raise WeightsError(f"{name} is a torch.save archive, not a safetensors file: name it .ckpt")
        if len(head) < 8 or n == 0 or n > _MAX_HEADER:
            raise WeightsError(f"{name} is not a safetensors file (its first 8 bytes are no header length)")
        if 8 + n > size:
            raise WeightsError(f"{name} is truncated: its header alone needs {8 + n} bytes, the file has {size}")
        try:
            header = json.loads(fh.read(n))
            if not isinstance(header, dict):
                raise ValueError("not an object")
            end = max([int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"] or [0])
        except (ValueError, KeyError, TypeError, IndexError):
            raise WeightsError(f"{name} is not a safetensors file (its header is not a safetensors JSON header)") from None
    if 8 + n + end > size:
        raise WeightsError(f"{name} is truncated: its tensors need {8 + n + end} bytes, the file has {size}")
    if 8 + n + end < size:
        raise WeightsError(f"{name} is damaged: {size - 8 - n - end} bytes follow its last tensor")
    return header


def read_safetensors_metadata(path: PathLike) -> Dict[str, str]:
    """The string metadata of a safetensors file.

    Raises:
        WeightsError: not a complete safetensors file (see :func:`safetensors_header`).
    """
    return dict(safetensors_header(path).get("__metadata__") or {})


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


def read_weights(path: Path, what: str = "weights file") -> tuple:
    """(string metadata, CPU state_dict) of a kdlab ``.safetensors`` file or run checkpoint
    (``best.ckpt``/``last.ckpt``: their ``model_meta``/``model`` entries; ``({}, None)`` if absent),
    with the content hash checked when the file records one.

    Raises:
        WeightsError: the file is empty, truncated, not a weights file, or fails its hash check.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        meta = dict(safetensors_header(path, what).get("__metadata__") or {})
        try:
            tensors = load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise WeightsError(f"{what} {str(path)!r} is damaged: {exc}") from None
        if HASH_KEY in meta:
            body = {k: v for k, v in meta.items() if k != HASH_KEY}
            _check_digest(f"{what} {str(path)!r}", meta[HASH_KEY], state_digest({"metadata": body, "tensors": tensors}))
        return meta, tensors
    ckpt = load_checkpoint(path, what=what)
    return ckpt.get("model_meta") or {}, ckpt.get("model")


def load_checked_state(model: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> nn.Module:
    """``model.load_state_dict(state)`` after checking that ``state`` has exactly ``model``'s tensors, each
    of the model's shape, and no NaN/inf in any floating-point tensor.

    Args:
        name: how messages name the file (e.g. ``"teacher 'runs/t/teacher.safetensors'"``).

    Raises:
        WeightsError: a missing or unexpected tensor, a tensor of another shape (gives both), or NaN/inf.
    """
    want = model.state_dict()
    arch = f"{getattr(model, 'arch', type(model).__name__)} {json.dumps(dict(getattr(model, 'arch_kwargs', {}) or {}), sort_keys=True)}"
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    if missing or extra:
        raise WeightsError(f"{name} does not hold the weights of {arch}: missing tensors {missing[:5]}, unexpected "
                           f"tensors {extra[:5]}")
    for key, ref in want.items():
        t = state[key]
        if tuple(t.shape) != tuple(ref.shape):
            raise WeightsError(f"{name}: tensor {key!r} has shape {tuple(t.shape)}, expected {tuple(ref.shape)} for {arch}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = "NaN" if bool(torch.isnan(t).any()) else "inf"
            raise WeightsError(f"{name}: tensor {key!r} contains {bad}: these weights are unusable (a diverged run?)")
    model.load_state_dict(state)
    return model


def build_from_metadata(build: Any, meta: Mapping[str, str], name: str, **fields: str) -> nn.Module:
    """``build(arch, **{arg: int(meta[key])}, **json arch_kwargs)`` with a clear error on bad metadata.

    Raises:
        WeightsError: a metadata key missing or unreadable, or an architecture kdlab cannot build.
    """
    try:
        kwargs = {arg: int(meta[key]) for arg, key in fields.items()}
        return build(meta["arch"], **kwargs, **json.loads(meta["arch_kwargs"]))
    except (KeyError, ValueError, TypeError) as exc:
        msg = str(exc) if not isinstance(exc, KeyError) or len(str(exc)) > 40 else f"metadata key {exc} missing"
        raise WeightsError(f"{name}: its metadata does not describe a network kdlab can build ({msg})") from None


def load_classifier(path: PathLike, map_location: Any = "cpu", what: str = "classifier") -> nn.Module:
    """Rebuild a registry classifier from a kdlab ``.safetensors`` (or ``best.ckpt``) file.

    Args:
        path: run directory, ``*.safetensors`` written by :func:`save_classifier`, or a kdlab
            ``best.ckpt``/``last.ckpt`` (which carry the same metadata).

    Returns:
        The model in eval mode on ``map_location``.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: the file is not a kdlab classifier (a generator, foreign metadata), is empty,
            truncated or edited (hash mismatch), or holds a tensor of the wrong shape or NaN/inf weights.
    """
    from kdlab.models import build_model

    path = resolve_weights(path)
    meta, state = read_weights(path, what)
    name = f"{what} {str(path)!r}"
    if state is None:
        raise WeightsError(f"{name} is a checkpoint without an exported model ('model_meta'/'model' entries)")
    if meta.get("format") != SAFETENSORS_FORMAT:
        held = (f"is not a kdlab classifier file: it holds a generator ({meta.get('arch')})"
                if meta.get("format") == "kdlab-generator-1"
                else f"is not a kdlab classifier file (metadata format {meta.get('format')!r})")
        raise WeightsError(f"{name} {held}; expected format {SAFETENSORS_FORMAT!r}")
    model = build_from_metadata(build_model, meta, name, num_classes="num_classes", in_channels="in_channels",
                                image_size="image_size")
    load_checked_state(model, state, name)
    return model.to(map_location).eval()
