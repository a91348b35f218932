"""Metrics of image-to-image translation (GAN compression, VEM paper sec. 5, Tables 1-4).

* :func:`paired_errors`: MAE and SSIM of translated images against the ground truth of a paired task
  (the pixel fidelity measures of pix2pix-style evaluations; SSIM of Wang et al. 2004 via torchmetrics).
* :func:`domain_accuracy`: overall and per-class accuracy of the output domain's classifier on translated
  images, kdlab's offline stand-in for the FCN-score / mIoU of Cityscapes (Isola et al. 2017, sec. 4.2:
  an off-the-shelf recogniser scores whether the translations are recognisable).
* :func:`compression_table`: parameters and MACs of a teacher and a student generator and their ratios
  (the #Params / MACs columns and compression rates of the VEM paper's Tables 1-3).
* :func:`translate`: a generator run over a translation dataset in eval mode.

Images are float tensors in [-1, 1] (the data sets' and the generators' range); the metric networks take
[0, 1] images (:func:`kdlab.metrics.generative.unit_range`). Imports only torch, torchmetrics and
kdlab.metrics (never kdlab.data / engine / methods): a dataset is anything whose ``__getitems__(rows)``
returns a batch with ``x``, ``target`` and ``y`` (a :class:`kdlab.data.TranslationDataset`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .accuracy import eval_mode
from .complexity import count_macs, count_parameters
from .generative import unit_range

__all__ = ["paired_errors", "domain_accuracy", "compression_table", "translate"]


def _check_pair(fake: Tensor, real: Tensor) -> None:
    for name, t in (("fake", fake), ("real", real)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() != 4:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} images must be a float tensor [B, C, H, W] in [-1, 1], got {got}")
    if fake.shape != real.shape:
        raise ValueError(f"translated images {tuple(fake.shape)} and ground truth {tuple(real.shape)} differ in shape")


def paired_errors(batches: Iterable[Tuple[Tensor, Tensor]]) -> Dict[str, float]:
    """MAE and SSIM of translated images against their ground truth, streamed over batches.

    ``mae = mean |(fake + 1) / 2 - (real + 1) / 2|`` over every pixel and channel of every image ([0, 1]
    pixel units: 0 = identical, 1 = black vs white everywhere); ``ssim`` = the mean over images of the
    SSIM of Wang et al. 2004 (eq. 13; torchmetrics ``StructuralSimilarityIndexMeasure``: 11x11 Gaussian
    window, sigma 1.5, K1 = 0.01, K2 = 0.03, ``data_range`` 1) on the [0, 1] images; 1 = identical.

    Args:
        batches: an iterable of ``(fake [B, C, H, W], real [B, C, H, W])`` in [-1, 1] (H, W >= 11 for SSIM's
            window), e.g. ``((f, t) for _, f, t, _ in translate(...))``.

    Returns:
        ``{"mae": float, "ssim": float, "n": images}``.

    Raises:
        ValueError: no batches; a batch whose two tensors are not float [B, C, H, W] of the same shape.
    """
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    ssim = None
    abs_sum, count, n = 0.0, 0, 0
    for fake, real in batches:
        _check_pair(fake, real)
        f, r = unit_range(fake.detach()).double(), unit_range(real.detach().to(fake.device)).double()
        abs_sum += float((f - r).abs().sum())
        count += f.numel()
        n += f.shape[0]
        if ssim is None:
            # sync_on_compute=False: one process scores the whole set (under DDP, rank 0 alone: no collective)
            ssim = StructuralSimilarityIndexMeasure(data_range=1.0, sync_on_compute=False).to(device=f.device,
                                                                                             dtype=torch.float64)
        ssim.update(f, r)
    if ssim is None:
        raise ValueError("paired_errors got no batches: the evaluation set is empty")
    return {"mae": abs_sum / count, "ssim": float(ssim.compute()), "n": n}


def domain_accuracy(classifier_logits_fn: Callable[[Tensor], Tensor], fake_images: Tensor, labels: Tensor,
                    num_classes: int, batch_size: int = 500) -> Dict[str, Any]:
    """Accuracy of the output domain's classifier on translated images (the FCN-score stand-in).

    Each translated image should be recognisable as its source image's class (``edges2fashion``: the
    garment's class; an unpaired task with a class correspondence: the source class).

    Args:
        classifier_logits_fn: [B, C, H, W] in [0, 1] -> logits [B, K]; use
            ``kdlab.metrics.ClassifierFeatures(classifier, spec.mean, spec.std, mode="logits")`` of the
            target domain's kdlab classifier, which applies that classifier's own normalisation.
        fake_images: [N, C, H, W] in [-1, 1] (mapped to [0, 1] here, as every generator metric does).
        labels: int [N] in 0..num_classes-1, the class each image should show.
        num_classes: K.
        batch_size: images per classifier call.

    Returns:
        ``{"accuracy": correct / N, "per_class": [K] accuracy of the images of each true class (NaN for a
        class without images), "mean_class_accuracy": the mean of the defined per-class values, "n": N}``.

    Raises:
        ValueError: shapes that disagree, labels outside [0, K), logits whose width is not K.
    """
    labels = torch.as_tensor(labels).reshape(-1).to(torch.int64).cpu()
    if not isinstance(fake_images, Tensor) or fake_images.dim() != 4 or fake_images.shape[0] != labels.shape[0]:
        got = tuple(fake_images.shape) if isinstance(fake_images, Tensor) else type(fake_images).__name__
        raise ValueError(f"fake_images must be [N, C, H, W] with one label each; got {got} and {labels.shape[0]} labels")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    preds = []
    with torch.no_grad():
        for i in range(0, fake_images.shape[0], batch_size):
            logits = classifier_logits_fn(unit_range(fake_images[i:i + batch_size].float()))
            if logits.dim() != 2 or logits.shape[1] != num_classes:
                raise ValueError(f"the classifier returned logits {tuple(logits.shape)}; expected [B, {num_classes}]")
            preds.append(logits.argmax(1).cpu())
    pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)
    hit = (pred == labels).double()
    totals = torch.bincount(labels, minlength=num_classes).double()
    correct = torch.bincount(labels, weights=hit, minlength=num_classes)
    per_class = torch.where(totals > 0, correct / totals.clamp_min(1), torch.full_like(totals, float("nan")))
    defined = per_class[totals > 0]
    return {"accuracy": float(hit.mean()) if hit.numel() else float("nan"), "per_class": per_class.tolist(),
            "mean_class_accuracy": float(defined.mean()) if defined.numel() else float("nan"), "n": int(labels.numel())}


def compression_table(teacher: nn.Module, student: nn.Module, input_shape: Sequence[int]) -> Dict[str, Any]:
    """Size and cost of a teacher and a student generator, and the compression ratios teacher / student.

    Args:
        teacher, student: generators taking one image of ``input_shape`` (for a CycleGAN, one direction's G).
        input_shape: (C, H, W) of the source images.

    Returns:
        ``{"teacher": {"params", "macs"}, "student": {...}, "params_ratio": float, "macs_ratio": float}`` with
        parameters of :func:`kdlab.metrics.count_parameters` and MACs per image of :func:`kdlab.metrics.count_macs`.

    Raises:
        ValueError: bad ``input_shape``; a student with no parameters or MACs (the ratio is undefined).
    """
    rows = {}
    for name, g in (("teacher", teacher), ("student", student)):
        rows[name] = {"params": count_parameters(g), "macs": count_macs(g, input_shape)}
    if rows["student"]["params"] == 0 or rows["student"]["macs"] == 0:
        raise ValueError(f"the student has {rows['student']['params']} parameters and {rows['student']['macs']} MACs; "
                         "compression ratios need both > 0")
    return {**rows, "params_ratio": rows["teacher"]["params"] / rows["student"]["params"],
            "macs_ratio": rows["teacher"]["macs"] / rows["student"]["macs"]}


def translate(generator: nn.Module, dataset: Any, batch_size: int = 500, device: Any = "cpu",
              rows: Optional[Sequence[int]] = None) -> Iterator[Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]]:
    """Run ``generator`` over a translation dataset in order, in eval mode without gradients.

    Args:
        generator: source images [B, C, H, W] in [-1, 1] -> translated [B, C_t, H, W] in [-1, 1].
        dataset: a :class:`kdlab.data.TranslationDataset` (anything whose ``__getitems__(rows)`` gives a batch
            with ``x``, ``target``, ``y``); use an un-augmented split.
        batch_size: rows per batch (>= 1).
        device: where the generator runs; the yielded tensors are on it.
        rows: the rows to translate (default all, in order).

    Yields:
        ``(source [B, C, H, W], fake [B, C_t, H, W], target [B, C_t, H, W], y int64 [B] or None)``.
        The generator's train/eval mode is restored when the iteration ends.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    order = list(range(len(dataset))) if rows is None else [int(r) for r in rows]
    with eval_mode(generator):
        for i in range(0, len(order), batch_size):
            b = dataset.__getitems__(order[i:i + batch_size])
            x = b.x.to(device)
            with torch.no_grad():  # not around the yield: grad mode is thread state, the caller keeps its own
                fake = generator(x)
            yield x, fake, b.target.to(device), (b.y.to(device) if b.y is not None else None)
