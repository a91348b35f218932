"""Top-1 accuracy, clean and under additive Gaussian input noise.

The noise protocol is the one of the Jacobian-matching paper (Srinivas & Fleuret 2018, Table 2):
each normalised test image ``x`` is replaced by ``x + sigma * N(0, I)`` and the top-1 accuracy is
measured on the perturbed images. ``sigma`` is in normalised units (after mean/std normalisation),
as in that table.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, Sequence, Tuple, Union

import torch
from torch import nn

DeviceLike = Union[str, torch.device]

__all__ = ["evaluate_accuracy", "accuracy_under_noise", "eval_mode"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule of ``model`` in eval mode; restore each one's own mode on exit.

    Restoring per submodule (not just ``model.train(was_training)``) keeps mixed states intact,
    e.g. a frozen teacher (eval) held inside a training method (train). Restored on exceptions too.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def _check_sigma(sigma: float) -> float:
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise ValueError(f"noise sigma must be a non-negative finite number, got {sigma!r}") from None
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"noise sigma must be a non-negative finite number, got {sigma!r}")
    return s


VIEWS = ("student", "teacher")


def _split_batch(batch: object, view: str = "student") -> Tuple[torch.Tensor, torch.Tensor]:
    """(inputs of ``view``, labels) of a :class:`kdlab.data.Batch` or an ``(x, y[, x_teacher])`` tuple."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        x = batch[2] if view == "teacher" and len(batch) > 2 else batch[0]
        y = batch[1]
    else:
        x = getattr(batch, "teacher_input" if view == "teacher" else "x", None)
        y = getattr(batch, "y", None)
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        return x, y
    raise ValueError(
        "the loader must yield labelled batches (kdlab.data.Batch with x and y, or (images [B,C,H,W], "
        f"labels [B]) pairs); got a batch of type {type(batch).__name__}"
    )


def _check_device(model: nn.Module, device: torch.device) -> None:
    p = next(model.parameters(), None)
    if p is not None and p.device.type != device.type:
        raise ValueError(
            f"the model's parameters are on {p.device} but device={str(device)!r}; "
            "move the model there first (model.to(device)) or pass its device"
        )


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    loader: Iterable,
    device: DeviceLike = "cpu",
    noise_sigma: float = 0.0,
    seed: int = 0,
    view: str = "student",
) -> float:
    """Top-1 accuracy of ``model`` over all batches of ``loader``, in percent.

    Args:
        model: maps ``x [B,C,H,W]`` (normalised float) to logits ``[B,K]``. It must already be on
            ``device``. It is put in eval mode for the evaluation and every submodule's
            train/eval mode is restored afterwards (also if an exception is raised).
        loader: iterable of labelled :class:`kdlab.data.Batch` es (or ``(x [B,C,H,W], y [B])`` tuples).
        device: where the batches are moved (the model's device).
        noise_sigma: std of the additive Gaussian noise ``x + sigma * N(0, I)`` in normalised units
            (Jacobian paper, Table 2); 0 evaluates clean inputs.
        seed: seeds a CPU ``torch.Generator`` that draws the noise, batch after batch in loader
            order; the same (seed, loader order) gives the same noise on any device. Two sigmas with
            the same seed share the same standard-normal draws (common random numbers), so the
            accuracy-vs-sigma curve is not blurred by resampling.
        view: ``"student"`` scores ``batch.x``; ``"teacher"`` scores the teacher's view
            (``batch.x_teacher`` with privileged data, else ``x``).

    Returns:
        Top-1 accuracy in percent, in [0, 100] (ties in the logits go to the lowest class index).

    Raises:
        ValueError: negative or non-finite ``noise_sigma``; a loader that yields no samples or
            batches that are not (x, y) tensor pairs; logits whose shape is not ``[B, K]``;
            a model whose parameters are on another device type than ``device``.
    """
    sigma = _check_sigma(noise_sigma)
    if view not in VIEWS:
        raise ValueError(f"view = {view!r}; accepted: {', '.join(VIEWS)}")
    dev = torch.device(device)
    _check_device(model, dev)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    correct = 0
    total = 0
    with eval_mode(model):
        for batch in loader:
            x, y = _split_batch(batch, view)
            if sigma > 0:
                # drawn on the CPU so that the noise does not depend on the device
                noise = torch.randn(x.shape, generator=gen, dtype=torch.float32)
                x = x.float() + sigma * noise.to(x.device)
            x = x.to(dev, non_blocking=True)
            y = y.to(dev, non_blocking=True)
            logits = model(x)
            if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
                raise ValueError(
                    f"the model must return logits of shape [B, K] with B={y.shape[0]}, "
                    f"got {tuple(logits.shape)}"
                )
            correct += int((logits.argmax(dim=1) == y).sum().item())
            total += int(y.shape[0])
    if total == 0:
        raise ValueError("the loader yielded no samples; cannot compute an accuracy")
    return 100.0 * correct / total


def accuracy_under_noise(
    model: nn.Module,
    loader: Iterable,
    sigmas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4),
    device: DeviceLike = "cpu",
    seed: int = 0,
) -> Dict[float, float]:
    """Top-1 accuracy (percent) for each noise level: ``{float(sigma): accuracy}``.

    One :func:`evaluate_accuracy` pass per sigma, all with the same ``seed`` (so the same unit
    noise is scaled by each sigma). Default sigmas are those of the Jacobian paper, Table 2.
    The loader must iterate in the same order each time (``shuffle=False``) for reproducibility.

    Raises:
        ValueError: an empty ``sigmas`` or any invalid sigma (see :func:`evaluate_accuracy`).
    """
    sig = [_check_sigma(s) for s in sigmas]
    if not sig:
        raise ValueError("sigmas is empty; give at least one noise level, e.g. (0.0, 0.1)")
    return {s: evaluate_accuracy(model, loader, device=device, noise_sigma=s, seed=seed) for s in sig}
