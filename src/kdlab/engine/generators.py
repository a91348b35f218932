"""Generator weights as safetensors with the metadata to rebuild them (GAN runs).

A GAN run exports its generator as ``teacher.safetensors`` (``kdlab train-gan``) or
``student.safetensors`` (``kdlab compress-gan``) with metadata ``format = kdlab-generator-1``,
``arch`` (``dcgan``/``wdcgan``), ``arch_kwargs`` (``{"d", "latent_dim"}``), ``out_channels``,
``image_size`` and the data set name; :func:`load_generator` rebuilds it from that alone.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from torch import nn

from kdlab.engine.checkpoint import PathLike, atomic_write, read_weights, resolve_run_file

GENERATOR_FORMAT = "kdlab-generator-1"


def generator_metadata(model: nn.Module, **extra: Any) -> Dict[str, str]:
    """The safetensors metadata that lets :func:`load_generator` rebuild ``model``."""
    meta = {
        "format": GENERATOR_FORMAT,
        "arch": str(model.arch),
        "arch_kwargs": json.dumps(dict(model.arch_kwargs), sort_keys=True),
        "out_channels": str(model.out_channels),
        "image_size": str(model.image_size),
    }
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def save_generator(model: nn.Module, path: PathLike, **extra: Any) -> Path:
    """Export a kdlab generator's weights (CPU, contiguous) as safetensors, atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, save(tensors, metadata=generator_metadata(model, **extra)))


def resolve_generator(path: PathLike) -> Path:
    """A GAN run directory (its ``student.safetensors`` or ``teacher.safetensors``), a ``.safetensors``
    or a ``.ckpt`` -> the file to load.

    Raises:
        FileNotFoundError: nothing there (names the path and what was looked for).
    """
    return resolve_run_file(
        path,
        ("student.safetensors", "teacher.safetensors", "generator.safetensors"),
        "generator file",
        "kdlab train-gan / kdlab compress-gan",
    )


def load_generator(path: PathLike, map_location: Any = "cpu") -> nn.Module:
    """Rebuild a kdlab generator from a run directory, ``.safetensors`` or ``best.ckpt``/``last.ckpt``.

    Returns:
        the generator in eval mode on ``map_location``; ``model.meta`` holds the file's metadata.

    Raises:
        FileNotFoundError: no such file. ValueError: not a kdlab generator file (e.g. a classifier).
    """
    from kdlab.models.gan import build_generator

    path = resolve_generator(path)
    meta, state = read_weights(path)
    if meta.get("format") != GENERATOR_FORMAT or state is None:
        raise ValueError(
            f"{str(path)!r} is not a kdlab generator file (metadata format {meta.get('format')!r}, expected "
            f"{GENERATOR_FORMAT!r}); classifiers are evaluated with `kdlab evaluate`"
        )
    model = build_generator(meta["arch"], out_channels=int(meta["out_channels"]), image_size=int(meta["image_size"]),
                            **json.loads(meta["arch_kwargs"]))
    model.load_state_dict(state)
    model.meta = dict(meta)
    return model.to(map_location).eval()
