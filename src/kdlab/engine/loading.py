"""One loader for every network a run reads from disk: teachers (classifiers or generators), metric
extractors and initial weights. Load, then check the network against the data set it will see, with
one error type per kind that names both shapes.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from kdlab.engine.checkpoint import load_classifier, resolve_weights
from kdlab.engine.digest import file_sha256
from kdlab.engine.generators import load_generator, resolve_generator

#: what a classifier check may compare: the number of classes, the input channels, the image size
CLASSIFIER_CHECKS = ("classes", "channels", "size")


class TeacherMismatchError(ValueError):
    """A classifier (teacher, extractor, initial weights) disagrees with the data set on classes,
    channels or image size; the message gives both."""


class GeneratorMismatchError(ValueError):
    """A generator's output shape does not match the data set's images (the message gives both)."""


def load_network(checkpoint: Any, spec: Any, *, kind: str = "classifier", what: str = "teacher",
                 check: Sequence[str] = CLASSIFIER_CHECKS, hint: str = "") -> Tuple[nn.Module, str]:
    """Load a kdlab network and check it against the data set ``spec``.

    Args:
        checkpoint: a run directory, ``.safetensors`` or ``.ckpt`` (None/empty: an error with ``hint``).
        spec: :class:`kdlab.data.DataSpec` of the data set the network will see.
        kind: ``"classifier"`` (checks ``check`` among classes/channels/size) or ``"generator"`` (checks the
            output image shape (C, S, S)).
        what: how messages name the network (``"teacher"``, ``"metric classifier"``...).
        hint: what to set when no checkpoint is given (e.g. ``teacher.checkpoint=runs/<teacher run>``).

    Returns:
        (the network in eval mode on the CPU, the resolved weights path as a string).

    Raises:
        ValueError: no checkpoint given. FileNotFoundError: the path does not exist.
        WeightsError: the file is empty, truncated, foreign, edited (hash mismatch), holds another kind of
            network, a tensor of the wrong shape or NaN/inf weights (a NaN teacher is refused).
        TeacherMismatchError / GeneratorMismatchError: the network does not fit the data set.
    """
    if not checkpoint:
        raise ValueError(f"this method needs a {what}: set {hint or 'teacher.checkpoint=runs/<run>'}")
    if kind == "generator":
        path = resolve_generator(checkpoint)
        net = load_generator(path, what=f"{what} generator")
        check_generator_shape(net, spec, f"{what} generator {str(path)!r}")
        return net.eval(), str(path)
    path = resolve_weights(checkpoint)
    net = load_classifier(path, what=what)
    fields = {"classes": ("num_classes", "num_classes"), "channels": ("in_channels", "in_channels"),
              "size": ("image_size", "image_size")}
    got = tuple(getattr(net, fields[c][0]) for c in check)
    want = tuple(getattr(spec, fields[c][1]) for c in check)
    if got != want:
        names = ", ".join({"classes": "classes", "channels": "channels", "size": "image size"}[c] for c in check)
        raise TeacherMismatchError(
            f"{what} {str(path)!r} expects ({names}) = {got}, but data set {spec.name!r} gives {want}")
    return net.eval(), str(path)


def check_generator_shape(gen: nn.Module, spec: Any, where: str) -> None:
    """Raise :class:`GeneratorMismatchError` if ``gen``'s images are not the data set's ``(C, S, S)`` (the output
    domain's channels ``spec.out_channels`` for a translation task), or if an image-to-image generator does
    not take the data set's input channels."""
    want = (getattr(spec, "out_channels", spec.in_channels), spec.image_size, spec.image_size)
    if tuple(gen.output_shape) != want:
        raise GeneratorMismatchError(
            f"{where} outputs images of shape {tuple(gen.output_shape)} (C, H, W), but data set {spec.name!r} "
            f"has images of shape {want}")
    if getattr(gen, "input_kind", "latent") == "image" and gen.in_channels != spec.in_channels:
        raise GeneratorMismatchError(
            f"{where} takes images of {gen.in_channels} channels, but data set {spec.name!r} gives inputs of "
            f"{spec.in_channels} channels")


def network_identity(net: nn.Module, path: str) -> Dict[str, Any]:
    """``{"name", "checkpoint", "sha256"}`` of a loaded network, for ``summary.json``."""
    return {"name": getattr(net, "arch", type(net).__name__), "checkpoint": path, "sha256": file_sha256(path)}


def load_extractor(extractor: Optional[str], spec: Any) -> Tuple[Optional[nn.Module], Optional[nn.Module], Dict[str, Any]]:
    """The metric networks of FID/KID/IS: (features for FID/KID, logits for IS, identity for reports).

    ``extractor``: a kdlab classifier (run directory, ``.safetensors`` or ``.ckpt``) trained on the same
    data set (input of its last linear layer / its logits), ``"inception"`` (torchmetrics' Inception-v3;
    its weights must be in the torch hub cache), or None: Inception when its weights are present, else
    no FID/KID/IS.

    Raises:
        TeacherMismatchError: the classifier's channels / image size differ from the data set's.
        FileNotFoundError: no such file. ValueError: "inception" without local weights.
    """
    from kdlab.metrics.extractors import ClassifierFeatures, InceptionExtractor, inception_weights_available

    if extractor is None and not inception_weights_available():
        return None, None, {"kind": None, "note": "no feature extractor: set eval.extractor=runs/<classifier run> "
                                                  "(kdlab train-teacher) for FID/KID/IS"}
    if extractor is None or str(extractor).lower() == "inception":
        if not inception_weights_available():
            raise ValueError("eval.extractor = 'inception' but the Inception-v3 FID weights (torch-fidelity, "
                             f"torch hub cache {torch.hub.get_dir()}) are not available offline; use a kdlab "
                             "classifier run instead")
        return InceptionExtractor("features"), InceptionExtractor("logits"), {
            "kind": "inception-v3", "name": "torchmetrics FID Inception-v3 (pool3 2048 / logits_unbiased)"}
    clf, path = load_network(extractor, spec, what="metric classifier", check=("channels", "size"))
    feats = ClassifierFeatures(clf, spec.mean, spec.std, "features")
    logits = ClassifierFeatures(clf, spec.mean, spec.std, "logits")
    return feats, logits, {"kind": "classifier", "name": clf.arch, "checkpoint": path,
                           "sha256": file_sha256(path), "num_features": feats.num_features,
                           "layer": "input of the last Linear layer (FID/KID); softmax of the logits (IS)"}


def check_extractor_path(extractor: Optional[str]) -> None:
    """Fail early (FileNotFoundError) on an extractor path that does not exist (not for "inception")."""
    if extractor and str(extractor).lower() != "inception":
        resolve_weights(extractor)
