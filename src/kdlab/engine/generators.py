"""Generator weights as safetensors with the metadata to rebuild them (GAN runs).

A GAN run exports its generator as ``teacher.safetensors`` (``kdlab train-gan``) or
``student.safetensors`` (``kdlab compress-gan``) with metadata ``format = kdlab-generator-1``,
``arch`` (a ``GENERATORS`` name: ``dcgan``, ``mosaic``, ``unet``, ``resnet_gen``, ``sagan`` ...), ``arch_kwargs``
(its factory's keywords, e.g. ``{"d", "latent_dim"}``; image-input generators include ``in_channels``),
``out_channels``, ``image_size`` and the data set name; :func:`load_generator` rebuilds it from that alone.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from torch import nn

from kdlab.engine.checkpoint import (SAFETENSORS_FORMAT, PathLike, WeightsError, atomic_write, build_from_metadata,
                                     load_checked_state, read_weights, resolve_run_file, save_with_hash)

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
    """Export a kdlab generator's weights (CPU, contiguous) as safetensors with their content hash, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, save_with_hash(tensors, generator_metadata(model, **extra)))


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


def load_generator(path: PathLike, map_location: Any = "cpu", what: str = "generator") -> nn.Module:
    """Rebuild a kdlab generator from a run directory, ``.safetensors`` or ``best.ckpt``/``last.ckpt``.

    Returns:
        the generator in eval mode on ``map_location``; ``model.meta`` holds the file's metadata.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: not a kdlab generator file (e.g. a classifier: names its architecture), empty,
            truncated, edited (hash mismatch), a tensor of the wrong shape, or NaN/inf weights.
    """
    from kdlab.models.gan import build_generator

    path = resolve_generator(path)
    meta, state = read_weights(path, what)
    name = f"{what} {str(path)!r}"
    if meta.get("format") != GENERATOR_FORMAT or state is None:
        held = (f"is not a kdlab generator file: it holds a classifier ({meta.get('arch')})"
                if meta.get("format") == SAFETENSORS_FORMAT
                else f"is not a kdlab generator file (metadata format {meta.get('format')!r})")
        raise WeightsError(f"{name} {held}; expected format {GENERATOR_FORMAT!r} (classifiers are evaluated with "
                           f"`kdlab evaluate`)")
    model = build_from_metadata(build_generator, meta, name, out_channels="out_channels", image_size="image_size")
    load_checked_state(model, state, name)
    model.meta = dict(meta)
    return model.to(map_location).eval()
